"""A data owner that refuses a task says why; the coordinator records it and goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support import LinearTrainer, job_text, make_clients, make_coordinator, parse

from fl_core.client.policy import OwnerPolicy
from fl_core.coordinator.store import Store
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve

pytestmark = pytest.mark.integration


def test_policy_refusal_is_recorded_and_the_round_goes_on(tmp_path: Path) -> None:
    job = parse(job_text(rounds=2, clients=4, min_clients=4, quorum=0.5))
    trainers = [LinearTrainer(i) for i in range(4)]
    store = Store(tmp_path / "s.db")
    coordinator = make_coordinator(job, store, trainers[0])
    clients = make_clients(job, trainers)
    clients[3].policy = OwnerPolicy(allow_evaluation=False)  # trains, never evaluates

    async def main():
        handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
        transports = [GrpcClientTransport(f"127.0.0.1:{handle.port}") for _ in clients]
        try:
            return await asyncio.gather(
                coordinator.run(), *(c.run(t) for c, t in zip(clients, transports, strict=True))
            )
        finally:
            for t in transports:
                await t.close()
            await handle.stop()

    done, *_ = asyncio.run(main())
    assert done.status == "completed"
    metrics = store.metrics(job.job.name)
    assert [m["num_clients"] for m in metrics] == [4, 4]
    assert [m["eval_clients"] for m in metrics] == [3, 3]
    refusals = store.events(job.job.name, "refusal")
    assert [r["client"] for r in refusals] == ["client-3", "client-3"]
    assert "policy: the owner does not take part in evaluation" in refusals[0]["detail"]
    assert clients[3].refusals[0].code == "policy"
    store.close()
