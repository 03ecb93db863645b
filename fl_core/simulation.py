"""Simulate a whole federation on one machine, over the same protocol code as a deployment.

``simulate(job)`` splits the job's data set among ``data.num_clients`` simulated data owners and
runs the coordinator with them:

- ``transport="inmemory"``: coordinator and clients share one event loop; client work runs in a
  small thread pool (one thread per core), so thousands of clients fit in one process;
- ``transport="grpc"``: the coordinator serves real gRPC on a loopback port and every client is a
  separate ``bulwark client`` process that dials in, exactly as in a deployment.

The coordinator's state lives in SQLite (``state.db`` in the output folder, or a temporary file);
``metrics.json`` and the final model (``model.safetensors``) are written to the output folder.
Every party keeps its audit log in ``audit/`` (``coordinator.db``, ``client-<i>.db``,
``keyholder.db``), and DP jobs give each owner a privacy ledger in ``ledgers/``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safetensors.numpy import save_file

from .aggregators import create_aggregator
from .audit import AuditLog
from .client.policy import OwnerPolicy
from .client.runtime import Client, ClientOptions, Participant
from .client.trainer import TorchTrainer
from .config import JobConfig
from .coordinator.events import Event
from .coordinator.service import Coordinator
from .coordinator.store import Store
from .data import ClientData, Dataset, PartitionConfig, load_dataset, split_for_clients
from .data.federated import WithdrawnMask
from .errors import ConfigError
from .federation import Roster, simulated_federation, simulated_roster
from .models import create_model
from .ray_backend import RayResources
from .strategies import create_strategy
from .supervise import supervise, supervise_processes
from .transport.base import JobDone
from .transport.grpc_server import serve
from .transport.inmemory import InMemoryTransport
from .types import Layout, Trainer, Weights

if TYPE_CHECKING:
    from .keyholder import SimulatedKeys

log = logging.getLogger("bulwark.simulation")

TRANSPORTS = ("inmemory", "grpc")
BACKENDS = ("local", "ray")


# --- data and models, shared by the simulator and the deployment commands ---------------------


def job_dataset(job: JobConfig) -> Dataset:
    """Load the job's data set (from local files only)."""
    return load_dataset(job.data.dataset, path=job.data.path or None)


def client_shares(
    job: JobConfig, dataset: Dataset, *, withdrawn: WithdrawnMask | None = None
) -> list[ClientData]:
    """Split ``dataset`` among the job's simulated clients, as the job's ``[data]`` says.

    Rows that ``withdrawn`` marks (an owner's ledger) are left out of the shares.
    """
    config = PartitionConfig(
        scheme=job.data.partition,
        num_clients=job.data.num_clients,
        alpha=job.data.alpha,
        min_size=job.data.min_examples,
    )
    return split_for_clients(
        dataset, config, rng=np.random.default_rng(job.data.seed), withdrawn=withdrawn
    )


def model_factory(
    job: JobConfig, *, input_shape: tuple[int, ...], num_classes: int
) -> Callable[[], torch.nn.Module]:
    """A function that builds the job's model: its own ``code.model`` (checked) or a registry's."""
    from .app import job_model_factory

    own = job_model_factory(job)
    if own is not None:
        return partial(own, input_shape=tuple(input_shape), num_classes=num_classes)
    return partial(create_model, job.model.name, input_shape=input_shape, num_classes=num_classes)


def make_trainer(job: JobConfig, dataset: Dataset, share: ClientData) -> Trainer:
    """A torch trainer for one client's share of the data set (DP-SGD when the job says so)."""
    from .app import make_owner_trainer
    from .owner import with_dpsgd

    model_fn = model_factory(job, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    base = make_owner_trainer(job, model_fn, share, task=dataset.task)
    if not isinstance(base, TorchTrainer):
        return base
    return with_dpsgd(job, base, model_fn)


def owner_ledgers(
    job: JobConfig, names: list[str], folder: Path, policy: OwnerPolicy | None
) -> dict[str, Path]:
    """One privacy ledger per simulated owner (only for DP jobs), with its cap set."""
    if job.dp.mode == "none":
        return {}
    from .owner import prepare_ledger

    return {
        name: prepare_ledger(
            folder / f"{name}.db", job=job, dataset=job.data.dataset, policy=policy
        )
        for name in names
    }


def initial_weights(job: JobConfig, *, input_shape: tuple[int, ...], num_classes: int) -> Weights:
    """The job's initial model, as every client's trainer also builds it (same seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.model.init_seed)
        model = model_factory(job, input_shape=input_shape, num_classes=num_classes)()
    return {k: v.detach().to(torch.float32).numpy().copy() for k, v in model.state_dict().items()}


def model_shape(job: JobConfig) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` from ``[model]``, or from the data set when omitted."""
    if job.model.input_shape and job.model.num_classes:
        return tuple(job.model.input_shape), job.model.num_classes
    dataset = job_dataset(job)
    return dataset.input_shape, dataset.num_classes


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationResult:
    """How a simulated job ended."""

    done: JobDone
    rounds: list[dict[str, object]]
    weights: Weights
    seconds: float
    transport: str
    output: Path | None = None
    client_errors: dict[str, str] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, object]:
        """The last completed round's metrics (empty if none completed)."""
        return self.rounds[-1] if self.rounds else {}


def write_outputs(
    output: Path,
    *,
    job: JobConfig,
    done: JobDone,
    rounds: list[dict[str, object]],
    weights: Weights,
    seconds: float,
    transport: str,
) -> None:
    """Write ``metrics.json`` and ``model.safetensors`` into ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    summary = {
        "job": job.job.name,
        "status": done.status,
        "reason": done.reason,
        "transport": transport,
        "seconds": round(seconds, 3),
        "rounds": rounds,
    }
    (output / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    save_file(
        {k: np.ascontiguousarray(v) for k, v in weights.items()},
        str(output / "model.safetensors"),
        # One metadata entry: safetensors writes several in no fixed order, and the same model
        # should be the same file whichever transport trained it.
        metadata={"bulwark": json.dumps({"job": job.job.name, "rounds": len(rounds)})},
    )


# --- the simulator ----------------------------------------------------------------------------


def simulate(
    job: JobConfig,
    *,
    transport: str = "inmemory",
    output: str | Path | None = None,
    events: Callable[[Event], None] | None = None,
    job_path: str | Path | None = None,
    roundtrip: bool = False,
    threads: int | None = None,
    owner_policy: str | Path | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    ray_resources: RayResources | None = None,
) -> SimulationResult:
    """Run ``job`` with all its data owners on this machine (or, with Ray, on a cluster).

    Args:
        job: the job.
        transport: ``"inmemory"`` or ``"grpc"`` (separate client processes over loopback).
        output: folder for ``state.db``, ``metrics.json`` and ``model.safetensors``.
        events: receives the coordinator's progress events.
        job_path: the job file (the gRPC clients read it; written to ``output`` when omitted).
        roundtrip: in memory, pass every payload through the wire codec.
        threads: torch threads per client (default: one per in-memory worker; one per process).
        owner_policy: a policy file every simulated owner applies (its budget caps the ledgers
            that DP jobs give each owner, in ``ledgers/`` of the output folder).
        backend: ``"local"`` (``transport`` decides) or ``"ray"``: every owner a Ray task
            talking gRPC to the coordinator in this process (:mod:`fl_core.ray_backend`).
        ray_address: the Ray cluster to use (default: a local instance for the run).
        ray_resources: what each owner's Ray task asks for (default one CPU).

    Raises:
        ConfigError: an unknown transport or a job that cannot run.
    """
    if transport not in TRANSPORTS:
        raise ConfigError(f"transport {transport!r} is not one of {list(TRANSPORTS)}")
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not one of {list(BACKENDS)}")
    if backend == "ray" and job.aggregation.kind == "he":
        raise ConfigError("--backend ray does not run HE jobs yet (the key holder is a process)")
    out = Path(output) if output is not None else None
    with tempfile.TemporaryDirectory(prefix="bulwark-sim-") as tmp:
        work = out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        store = Store(work / "state.db")
        policy_path = Path(owner_policy) if owner_policy is not None else None
        policy = OwnerPolicy.from_toml(policy_path) if policy_path is not None else None
        names = [f"client-{i}" for i in range(job.data.num_clients)]
        ledgers = owner_ledgers(job, names, work / "ledgers", policy)
        try:
            if backend == "ray":
                return _simulate_ray(
                    job,
                    store,
                    out,
                    events,
                    threads or 1,
                    policy_path,
                    ledgers,
                    ray_address=ray_address,
                    resources=ray_resources or RayResources(),
                )
            if transport == "inmemory":
                return _simulate_inmemory(
                    job, store, out, events, roundtrip, threads, policy, ledgers
                )
            if job_path is None:
                job_path = work / "job.toml"
                Path(job_path).write_text(job.source)
            return _simulate_grpc(
                job, store, out, events, Path(job_path), threads or 1, policy_path, ledgers, work
            )
        finally:
            store.close()


def _simulate_ray(
    job: JobConfig,
    store: Store,
    out: Path | None,
    events: Callable[[Event], None] | None,
    threads: int,
    policy_path: Path | None,
    ledgers: dict[str, Path],
    *,
    ray_address: str | None,
    resources: RayResources,
) -> SimulationResult:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from .ray_backend import OwnerSpec, collect, ray_session, submit_owners

    input_shape, num_classes = model_shape(job)
    weights = initial_weights(job, input_shape=input_shape, num_classes=num_classes)
    evaluator = None
    if job.dp.mode != "none":
        dataset = job_dataset(job)
        evaluator = central_evaluator(job, dataset, client_shares(job, dataset))
    names = [f"client-{i}" for i in range(job.data.num_clients)]
    federation = simulated_federation(names)
    coordinator = _coordinator(
        job, store, weights, events, evaluator, federation.roster, federation.keys["coordinator"]
    )
    specs = [
        OwnerSpec(
            name=name,
            partition=i,
            job_source=job.source,
            identity_pem=federation.keys[name].private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
            ),
            roster_json=federation.roster.to_json(federation.signature),
            authority=federation.roster.authority,
            ledger=str(ledgers[name]) if name in ledgers else None,
            policy=str(policy_path) if policy_path is not None else None,
            threads=threads,
        )
        for i, name in enumerate(names)
    ]
    started = time.perf_counter()
    errors: dict[str, str] = {}
    with ray_session(ray_address) as ray:
        # A cluster's tasks dial this node; a local instance's tasks dial loopback.
        listen = "127.0.0.1:0" if ray_address is None else "0.0.0.0:0"  # noqa: S104
        host = "127.0.0.1" if ray_address is None else ray.util.get_node_ip_address()

        async def main() -> JobDone:
            handle = await serve(coordinator, address=listen, limits=job.limits)
            refs = submit_owners(ray, specs, f"{host}:{handle.port}", resources)
            try:
                done = await coordinator.run()
            finally:
                errors.update(await collect(refs, names))
                await handle.stop(grace=1.0)
            return done

        done = asyncio.run(main())
    return _finish(job, coordinator, done, Layout.of(weights), started, "ray", out, errors)


def _he_keys(job: JobConfig, names: list[str]) -> SimulatedKeys | None:
    """Identity keys of the owners and the key holder when the job aggregates with HE."""
    if job.aggregation.kind != "he":
        return None
    from .keyholder import SimulatedKeys

    return SimulatedKeys.generate(names)


def central_evaluator(
    job: JobConfig, dataset: Dataset, shares: list[ClientData]
) -> Callable[[npt.NDArray[np.float32]], dict[str, object]] | None:
    """DP jobs only: the simulator's own evaluation of a global model on the pooled test shares.

    In a DP job the owners refuse to answer evaluation tasks (an answer about their test data
    is a release their budget does not cover). A simulation holds every share anyway, so it
    evaluates the model itself on the union of the owners' test shares, which is what a
    federated evaluation of every owner would report. A deployed coordinator has no such data:
    its DP jobs report no accuracy unless the owners' policies allow it.
    """
    if job.dp.mode == "none":
        return None
    x_test = np.concatenate([s.x_test for s in shares])
    y_test = np.concatenate([s.y_test for s in shares])
    model_fn = model_factory(job, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    trainer = TorchTrainer(
        model_fn,
        x_train=x_test[:1],
        y_train=y_test[:1],
        x_test=x_test,
        y_test=y_test,
        task=dataset.task,
        seed=job.model.init_seed,
    )
    layout = Layout.of(trainer.initial_weights())

    def evaluate(flat: npt.NDArray[np.float32]) -> dict[str, object]:
        result = trainer.evaluate(layout.unflatten(np.array(flat, dtype=np.float32, copy=True)))
        return {
            "loss": float(result.loss),
            **{k: float(v) for k, v in result.metrics.items()},
            "eval_examples": int(result.num_examples),
            "eval_central": 1,
        }

    return evaluate


AUDIT_DIR = "audit"
"""The folder of a run's output that holds every party's audit log."""

COORDINATOR_NAME = "coordinator"
KEYHOLDER_NAME = "keyholder"


def audit_path(folder: Path, party: str) -> Path:
    """The audit log of ``party`` in a run's output ``folder``."""
    return folder / AUDIT_DIR / f"{party}.db"


def _audit_log(out: Path | None, party: str, role: str) -> AuditLog | None:
    """The in-memory simulation's audit log of ``party``: kept only with an output folder.

    Without one there is nowhere to keep it, and thousands of simulated owners would each pay
    a synchronous write per entry for nothing.
    """
    return None if out is None else AuditLog(audit_path(out, party), party=party, role=role)


def _coordinator(
    job: JobConfig,
    store: Store,
    weights: Weights,
    events: Callable[[Event], None] | None,
    evaluator: Callable[[npt.NDArray[np.float32]], dict[str, object]] | None = None,
    roster: Roster | None = None,
    identity_key: Ed25519PrivateKey | None = None,
    audit: AuditLog | None = None,
) -> Coordinator:
    layout = Layout.of(weights)
    return Coordinator(
        job,
        store=store,
        initial_weights=layout.flatten(weights),
        strategy=create_strategy(job.strategy),
        aggregator=create_aggregator(job),
        events=events,
        central_evaluator=evaluator,
        roster=roster,
        identity_key=identity_key,
        audit=audit,
    )


def _finish(
    job: JobConfig,
    coordinator: Coordinator,
    done: JobDone,
    layout: Layout,
    started: float,
    transport: str,
    out: Path | None,
    client_errors: dict[str, str],
) -> SimulationResult:
    rounds = coordinator.store.metrics(job.job.name)
    weights = layout.unflatten(coordinator.global_weights)
    seconds = time.perf_counter() - started
    if out is not None:
        write_outputs(
            out,
            job=job,
            done=done,
            rounds=rounds,
            weights=weights,
            seconds=seconds,
            transport=transport,
        )
    return SimulationResult(
        done=done,
        rounds=rounds,
        weights=weights,
        seconds=seconds,
        transport=transport,
        output=out,
        client_errors=client_errors,
    )


def _simulate_inmemory(
    job: JobConfig,
    store: Store,
    out: Path | None,
    events: Callable[[Event], None] | None,
    roundtrip: bool,
    threads: int | None,
    policy: OwnerPolicy | None,
    ledgers: dict[str, Path],
) -> SimulationResult:
    dataset = job_dataset(job)
    shares = client_shares(job, dataset)
    trainers = [make_trainer(job, dataset, share) for share in shares]
    weights = trainers[0].initial_weights()
    evaluator = central_evaluator(job, dataset, shares)
    audit = _audit_log(out, COORDINATOR_NAME, "coordinator")
    names = [f"client-{i}" for i in range(len(trainers))]
    keys = _he_keys(job, names)
    # A federation of its own: a roster signed by a throwaway authority, so joins prove key
    # possession against it and secure aggregation pins every peer to it, as in a deployment.
    roster, roster_keys = simulated_roster(names) if keys is None else (None, {})
    coordinator = _coordinator(
        job, store, weights, events, evaluator, roster, roster_keys.get("coordinator"), audit
    )
    clients: list[Participant] = [
        Client(
            name=name,
            job=job,
            trainer=t,
            options=ClientOptions(long_poll_s=30.0),
            identity_key=keys.owners[name] if keys is not None else roster_keys[name],
            policy=policy if keys is None else keys.owner_policy(),
            ledger=ledgers.get(name),
            roster=roster,
            audit=_audit_log(out, name, "owner"),
            tls=False,
            coordinator=COORDINATOR_NAME,
        )
        for name, t in zip(names, trainers, strict=True)
    ]
    if keys is not None:  # HE aggregation: the key holder takes part in process
        clients.append(
            keys.keyholder_participant(
                job,
                audit=_audit_log(out, KEYHOLDER_NAME, "keyholder"),
            )
        )
    workers = max(1, os.cpu_count() or 1)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or max(1, previous_threads // workers))
    started = time.perf_counter()
    errors: dict[str, str] = {}

    async def main() -> JobDone:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=workers))
        transports = [
            InMemoryTransport(coordinator, roundtrip=roundtrip, limits=job.limits) for _ in clients
        ]

        async def member(client: Participant, transport: InMemoryTransport) -> str | None:
            try:
                await client.run(transport)
            except Exception as exc:  # noqa: BLE001 - reported as this client's error
                return f"{type(exc).__name__}: {exc}"
            return None

        members = {
            c.name: asyncio.ensure_future(member(c, t))
            for c, t in zip(clients, transports, strict=True)
        }
        try:
            done = await supervise(
                job, coordinator.run(), members, owners=set(names), errors=errors
            )
            await asyncio.wait(members.values(), timeout=30)  # they learn that the job ended
        finally:
            for task in members.values():
                task.cancel()
            await asyncio.gather(*members.values(), return_exceptions=True)
        for name, task in members.items():
            if not task.cancelled() and task.result():
                errors.setdefault(name, str(task.result()))
        return done

    try:
        done = asyncio.run(main())
    finally:
        torch.set_num_threads(previous_threads)
        for party in [audit, *(c.audit for c in clients)]:
            if party is not None:
                party.close()
    return _finish(job, coordinator, done, Layout.of(weights), started, "inmemory", out, errors)


def _simulate_grpc(
    job: JobConfig,
    store: Store,
    out: Path | None,
    events: Callable[[Event], None] | None,
    job_path: Path,
    threads: int,
    policy_path: Path | None,
    ledgers: dict[str, Path],
    work: Path,
) -> SimulationResult:
    input_shape, num_classes = model_shape(job)
    weights = initial_weights(job, input_shape=input_shape, num_classes=num_classes)
    evaluator = None
    if job.dp.mode != "none":
        dataset = job_dataset(job)
        evaluator = central_evaluator(job, dataset, client_shares(job, dataset))
    audit = AuditLog(audit_path(work, COORDINATOR_NAME), party=COORDINATOR_NAME, role="coordinator")
    names = [f"client-{i}" for i in range(job.data.num_clients)]
    keys = _he_keys(job, names)
    identities = Path(store.path).parent / "identities"
    files = None if keys is None else keys.write(identities)
    # Without HE: a federation of its own, its roster and keys written for the client processes.
    federation = simulated_federation(names) if keys is None else None
    paths = federation.write(identities / "federation") if federation is not None else {}
    coordinator = _coordinator(
        job,
        store,
        weights,
        events,
        evaluator,
        federation.roster if federation is not None else None,
        federation.keys["coordinator"] if federation is not None else None,
        audit,
    )
    started = time.perf_counter()
    errors: dict[str, str] = {}

    def he_args(i: int) -> list[str]:
        extra: list[str] = ["--audit", str(audit_path(work, names[i]))]
        extra += ["--coordinator-name", COORDINATOR_NAME]
        if names[i] in ledgers:
            extra += ["--ledger", str(ledgers[names[i]])]
        if policy_path is not None and files is None:
            extra += ["--policy", str(policy_path)]
        if files is None:
            return extra + [
                *("--name", names[i], "--identity", str(paths[names[i]])),
                *("--federation", str(paths["roster"]), "--authority", str(paths["authority"])),
            ]
        return extra + [
            "--identity",
            str(files.owner_identities[names[i]]),
            "--policy",
            str(files.owner_policy),
        ]

    async def main() -> JobDone:
        handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
        if files is not None:  # HE aggregation: the key holder is a process too
            keyholder = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "fl_core.cli", "keyholder", "--quiet"),
                *("--coordinator", f"127.0.0.1:{handle.port}", "--job", str(job_path)),
                *("--enrolment", str(files.enrolment), "--identity", str(files.keyholder_identity)),
                *("--audit", str(audit_path(work, KEYHOLDER_NAME))),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fl_core.cli",
                "client",
                "--coordinator",
                f"127.0.0.1:{handle.port}",
                "--job",
                str(job_path),
                "--partition",
                str(i),
                "--threads",
                str(threads),
                "--quiet",
                *he_args(i),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for i in range(job.data.num_clients)
        ]
        if files is not None:
            procs.append(keyholder)

        named = {(names[i] if i < len(names) else "keyholder"): p for i, p in enumerate(procs)}
        try:
            return await supervise_processes(
                job, coordinator.run(), named, owners=set(names), errors=errors
            )
        finally:
            await handle.stop(grace=1.0)

    try:
        done = asyncio.run(main())
    finally:
        audit.close()
    return _finish(job, coordinator, done, Layout.of(weights), started, "grpc", out, errors)
