"""Virtual data owners as Ray tasks: the same job on a laptop and on a Ray cluster.

``bulwark simulate JOB --backend ray`` runs the coordinator in this process (serving gRPC) and every
data owner as a Ray task that loads its share, builds the job's trainer and runs the ordinary
:class:`fl_core.client.runtime.Client` against the coordinator over gRPC: the protocol code is the
one a deployed owner runs, only the process that hosts it is placed by Ray. Each task asks Ray for
the resources of :class:`RayResources` (``num_cpus``, ``num_gpus``), so a cluster packs as many
owners per node as those allow.

Everything a task needs travels in its arguments: the job file's text (the owner parses it itself,
so its hash is checked at join as in a deployment), the federation roster's text and authority key,
and the owner's identity key (a simulation's own keys, made for this run). Without
``ray_address`` a local Ray instance is started for the run and shut down after it; with one, the
coordinator listens on every interface and the tasks dial this node's address (plaintext: use it
on a cluster's private network only).

Ray is an optional extra: ``pip install 'bulwark[ray]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

RAY_TASK_TIMEOUT_S = 120.0
"""How long after the job ends the owners' tasks may take to finish."""


@dataclass(frozen=True, slots=True)
class RayResources:
    """What each virtual owner asks Ray for."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if not self.num_cpus > 0 or self.num_gpus < 0:
            raise ConfigError(
                f"Ray resources per owner: num_cpus = {self.num_cpus} must be > 0 and "
                f"num_gpus = {self.num_gpus} >= 0"
            )


@dataclass(frozen=True, slots=True)
class OwnerSpec:
    """One virtual owner, as a Ray task receives it (plain data only)."""

    name: str
    partition: int
    job_source: str
    identity_pem: bytes
    roster_json: str
    authority: bytes
    ledger: str | None = None
    policy: str | None = None
    threads: int = 1


def ray_module() -> Any:
    """Import Ray, or say how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--backend ray needs Ray: pip install 'bulwark[ray]' (or pip install ray)"
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Connect to the Ray cluster at ``address``, or start a local instance for the run."""
    ray = ray_module()
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except ConnectionError as exc:
            raise ConfigError(f"--ray-address {address}: cannot connect to Ray ({exc})") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_owner(spec: OwnerSpec, coordinator: str) -> dict[str, object]:
    """The body of one Ray task: an ordinary data owner against ``coordinator`` over gRPC."""
    import torch
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from .client.policy import OwnerPolicy
    from .client.runtime import Client, ClientOptions
    from .config import parse_job
    from .federation import Roster
    from .owner import load_owner_data, owner_trainer
    from .transport.grpc_client import GrpcClientTransport

    torch.set_num_threads(spec.threads)
    job = parse_job(spec.job_source)
    key = load_pem_private_key(spec.identity_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{spec.name}: the identity key is not an Ed25519 key")
    owner = Client(
        name=spec.name,
        job=job,
        trainer=owner_trainer(job, load_owner_data(job, partition=spec.partition, data=None)),
        identity_key=key,
        policy=OwnerPolicy.from_toml(spec.policy) if spec.policy else OwnerPolicy(),
        ledger=spec.ledger,
        options=ClientOptions(long_poll_s=30.0),
        roster=Roster.parse(spec.roster_json, spec.authority, source="the simulation's roster"),
    )

    async def main() -> dict[str, object]:
        transport = GrpcClientTransport(coordinator, limits=job.limits)
        try:
            done = await owner.run(transport)
        finally:
            await transport.close()
        return {"name": spec.name, "status": done.status, "tasks": owner.tasks_done}

    return asyncio.run(main())


def submit_owners(
    ray: Any, specs: list[OwnerSpec], coordinator: str, resources: RayResources
) -> list[Any]:
    """Start one Ray task per owner; returns their object refs (awaitable)."""
    task = ray.remote(run_owner).options(
        num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=0
    )
    return [task.remote(spec, coordinator) for spec in specs]


async def collect(refs: list[Any], names: list[str]) -> dict[str, str]:
    """Wait for the owners' tasks; return the error of each that failed, by name."""
    errors: dict[str, str] = {}
    for name, ref in zip(names, refs, strict=True):
        try:
            await asyncio.wait_for(asyncio.wrap_future(ref.future()), RAY_TASK_TIMEOUT_S)
        except TimeoutError:
            errors[name] = f"its Ray task did not finish within {RAY_TASK_TIMEOUT_S:g} s"
        except Exception as exc:  # noqa: BLE001 - a task's failure is reported, not raised
            cause = getattr(exc, "cause", None) or exc
            errors[name] = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:300]}"
    return errors
