"""FedAvg over real loopback gRPC: 5 clients, 3 rounds, checked against an independent FedAvg."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from support import (
    LinearTrainer,
    fedavg_oracle,
    job_text,
    make_clients,
    make_coordinator,
    parse,
    run_federation,
)

from fl_core.coordinator.store import Store
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve
from fl_core.transport.inmemory import InMemoryTransport

pytestmark = pytest.mark.integration


def _run(transport: str, tmp_path: Path, *, strategy: str = "fedavg"):
    job = parse(job_text(strategy=strategy))
    trainers = [LinearTrainer(i) for i in range(5)]
    store = Store(tmp_path / f"{transport}.db")
    coordinator = make_coordinator(job, store, trainers[0])
    clients = make_clients(job, trainers)

    async def main():
        if transport == "grpc":
            handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
            transports = [GrpcClientTransport(f"127.0.0.1:{handle.port}") for _ in clients]
            try:
                return await run_federation(job, coordinator, clients, transports)
            finally:
                await handle.stop()
        transports = [
            InMemoryTransport(coordinator, roundtrip=transport == "roundtrip") for _ in clients
        ]
        return await run_federation(job, coordinator, clients, transports)

    done = asyncio.run(main())
    checkpoints = [store.checkpoint(job.job.name, r) for r in range(1, 4)]
    metrics = store.metrics(job.job.name)
    store.close()
    return done, trainers, checkpoints, metrics


def test_global_model_equals_independent_fedavg_each_round(tmp_path: Path) -> None:
    done, trainers, checkpoints, metrics = _run("grpc", tmp_path)
    assert done.status == "completed"
    assert [m["round"] for m in metrics] == [1, 2, 3]
    for rnd, checkpoint in enumerate(checkpoints, start=1):
        assert sorted(metrics[rnd - 1]["clients"]) == [f"client-{i}" for i in range(5)]
        np.testing.assert_allclose(checkpoint, fedavg_oracle(trainers, rnd), rtol=0, atol=1e-6)
    assert metrics[-1]["bytes_up"] > 0 and metrics[-1]["bytes_down"] > 0
    assert metrics[-1]["loss"] < metrics[0]["loss"]  # federated evaluation improves


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_inmemory_and_grpc_agree_bit_for_bit(tmp_path: Path, strategy: str) -> None:
    _, _, over_grpc, _ = _run("grpc", tmp_path, strategy=strategy)
    _, _, in_memory, _ = _run("inmemory", tmp_path, strategy=strategy)
    _, _, roundtrip, _ = _run("roundtrip", tmp_path, strategy=strategy)
    for a, b, c in zip(over_grpc, in_memory, roundtrip, strict=True):
        assert a.tobytes() == b.tobytes() == c.tobytes()
