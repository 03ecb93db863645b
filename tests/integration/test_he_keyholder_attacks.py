"""Issue 10 over real loopback gRPC: a hostile coordinator sends the key holder (a real
participant dialling in) a crafted aggregate with three owners' genuine receipts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from he_attacks import (
    decrypt_with_recovered_key,
    first_chunk,
    forged_aggregates,
    recover_secret_key,
)
from support import LinearTrainer, job_text, parse

import he
from fl_core.aggregators import create_aggregator
from fl_core.client.runtime import ClientOptions
from fl_core.coordinator.service import Coordinator
from fl_core.coordinator.store import Store
from fl_core.errors import RoundAborted
from fl_core.he_job import SignedContext, vector_spec
from fl_core.keyholder import SimulatedKeys
from fl_core.payload import Payload
from fl_core.strategies import create_strategy
from fl_core.transport.base import JobDone
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve
from fl_core.types import Layout

pytestmark = pytest.mark.integration

NAMES = ["client-0", "client-1", "client-2"]
EXTRA = (  # CKKS reals: the parameters the crafted ciphertexts are written for
    "[aggregation]\nkind = 'he'\n[he]\nreals = 'ckks'\nclip = 10.0\nmax_weight = 1000\n"
    "min_contributors = 3\n"
)
OPTIONS = ClientOptions(long_poll_s=5.0, backoff_initial_s=0.05)


@pytest.mark.parametrize("attack", ["key-probe", "one-owner"])
def test_a_hostile_coordinator_gets_nothing_from_the_key_holder_over_grpc(
    tmp_path: Path, attack: str
) -> None:
    job = parse(job_text(clients=3, min_clients=3, extra=EXTRA))
    keys = SimulatedKeys.generate(NAMES)
    spec = vector_spec(job, length=8192)
    rng = np.random.default_rng(4)
    vectors = {n: rng.uniform(-10.0, 10.0, spec.length) for n in NAMES}
    seen: dict[str, Any] = {}

    async def hostile(c: Any) -> JobDone:
        # The coordinator's own stages, driven over gRPC: the signed context, then the forgery.
        (kh,) = await c.wait_for_clients(1, 30.0, role="keyholder")

        async def stage(name: str, payload: Payload) -> Any:
            out = await c.driver.run_stage(
                job_id=c.job_id, round=1, attempt=1, stage=name, tasks={kh: payload},
                check=lambda _s, _c, p: p, quorum=1, timeout=20.0,
            )  # fmt: skip
            return out.results[kh]

        public = SignedContext.from_payload(
            await stage("he.context", Payload({"he.job_sha256": job.sha256}))
        ).open(job)
        contributions = {  # what the owners sent it, genuinely signed
            n: he.encrypt_vector(
                public, vectors[n], spec=spec, job_id=c.job_id, round=1, owner_id=n,
                signing_key=keys.owners[n],
            )
            for n in NAMES
        }  # fmt: skip
        forged = forged_aggregates(
            public, contributions, spec=spec, job_id=c.job_id, round=1,
            enrolment=keys.enrolment(),
        )[attack]  # fmt: skip
        seen.update(public=public, contributions=contributions)
        try:
            reply = await stage("he.decrypt", Payload({"he.aggregate": forged.to_bytes()}))
            seen["release"] = he.Release.from_bytes(reply.get_bytes("he.release"))
            done = JobDone("completed")
        except RoundAborted as exc:
            seen["aborted"] = str(exc)
            done = JobDone("failed", str(exc))
        c.finish(done)
        await c.wait_clients_notified(2.0)
        return done

    store = Store(tmp_path / "s.db")
    weights = LinearTrainer(0).initial_weights()
    coordinator = Coordinator(
        job,
        store=store,
        initial_weights=Layout.of(weights).flatten(weights),
        strategy=create_strategy(job.strategy),
        aggregator=create_aggregator(job),
        runner=hostile,
    )
    holder = keys.keyholder_participant(job, options=OPTIONS)

    async def main() -> None:
        handle = await serve(coordinator, address="127.0.0.1:0", limits=coordinator.job.limits)
        transport = GrpcClientTransport(f"127.0.0.1:{handle.port}")
        client = asyncio.create_task(holder.run(transport))
        try:
            await coordinator.run()
            await asyncio.wait_for(asyncio.gather(client, return_exceptions=True), 10.0)
        finally:
            await transport.close()
            await handle.stop()

    asyncio.run(main())
    store.close()

    if "release" in seen:
        released = seen["release"].vector()
        first = seen["contributions"][NAMES[0]]
        if attack == "key-probe":
            key = recover_secret_key(released)
            released = decrypt_with_recovered_key(key, first_chunk(first), seen["public"])
        error = float(np.abs(released[:4096] - vectors[NAMES[0]][:4096]).max())
        pytest.fail(f"{attack} over gRPC: {NAMES[0]}'s contribution came out, error {error:.1e}")
    assert "key holder refuses" in seen["aborted"]
    assert holder.decryption_refusals and holder.decryption_log == ()
