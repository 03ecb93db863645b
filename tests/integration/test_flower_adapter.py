"""Flower ``NumPyClient``s as Bulwark data owners, end to end with Bulwark's coordinator.

The same five Flower clients train in a Bulwark job (in memory, over real loopback gRPC, and
with secure aggregation over gRPC); each round's global model is compared with an independent
FedAvg of fresh copies of the same clients, aggregated by Flower's own ``aggregate``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from support import job_text, parse, run_federation
from support_flower import LinearNumPyClient, flower_fedavg, numpy_client_app

from fl_core.aggregators import create_aggregator
from fl_core.client.runtime import Client, ClientOptions
from fl_core.coordinator.service import Coordinator
from fl_core.coordinator.store import Store
from fl_core.flower import NumPyClientTrainer, client_app_trainer
from fl_core.strategies import create_strategy
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve
from fl_core.transport.inmemory import InMemoryTransport
from fl_core.types import Layout

pytestmark = pytest.mark.integration

ROUNDS = 3
SECAGG = """
[aggregation]
kind = "secagg"
[secagg]
clip = 10.0
max_weight = 1000
"""


def _run(transport: str, tmp_path: Path, extra: str = "", *, app: bool = False):
    job = parse(job_text(rounds=ROUNDS, extra=extra))
    flower_clients = [LinearNumPyClient(i) for i in range(5)]
    trainers = [NumPyClientTrainer(c, names=["w", "b"]) for c in flower_clients]
    if app:  # the same clients behind a Flower ClientApp, one node per partition
        trainers = [
            client_app_trainer(
                numpy_client_app(), node_config={"partition-id": i}, names=["w", "b"]
            )
            for i in range(5)
        ]
    store = Store(tmp_path / f"{transport}.db")
    weights = trainers[0].initial_weights()
    coordinator = Coordinator(
        job,
        store=store,
        initial_weights=Layout.of(weights).flatten(weights),
        strategy=create_strategy(job.strategy),
        aggregator=create_aggregator(job),
    )
    options = ClientOptions(long_poll_s=5.0, backoff_initial_s=0.05)
    clients = [
        Client(name=f"client-{i}", job=job, trainer=t, options=options)
        for i, t in enumerate(trainers)
    ]

    async def main():
        if transport == "grpc":
            handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
            try:
                transports = [GrpcClientTransport(f"127.0.0.1:{handle.port}") for _ in clients]
                return await run_federation(job, coordinator, clients, transports)
            finally:
                await handle.stop()
        return await run_federation(
            job, coordinator, clients, [InMemoryTransport(coordinator) for _ in clients]
        )

    done = asyncio.run(main())
    checkpoints = [store.checkpoint(job.job.name, r) for r in range(1, ROUNDS + 1)]
    metrics = store.metrics(job.job.name)
    store.close()
    return done, flower_clients, checkpoints, metrics


def _independent() -> list[np.ndarray]:
    history = flower_fedavg(
        [LinearNumPyClient(i) for i in range(5)], ROUNDS, {"learning-rate": 0.05}
    )
    return [np.concatenate([p.reshape(-1) for p in params]) for params in history]


@pytest.mark.parametrize("transport", ["inmemory", "grpc"])
def test_numpy_clients_in_a_bulwark_job_give_flowers_fedavg(tmp_path: Path, transport: str) -> None:
    done, flower_clients, checkpoints, metrics = _run(transport, tmp_path)
    assert done.status == "completed"
    for got, want in zip(checkpoints, _independent(), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    config = flower_clients[0].configs[0]  # what the Flower client saw in round 1
    assert config["server-round"] == 1 and config["local-epochs"] == 1
    assert config["learning-rate"] == pytest.approx(0.05)
    assert metrics[-1]["loss"] < metrics[0]["loss"]  # Flower's evaluate ran, and improves


def test_numpy_clients_under_bulwark_secure_aggregation(tmp_path: Path) -> None:
    done, _, checkpoints, metrics = _run("grpc", tmp_path, extra=SECAGG)
    assert done.status == "completed"
    assert "secagg_degree" in metrics[0]  # the round really ran SecAgg stages
    for got, want in zip(checkpoints, _independent(), strict=True):
        # quantization to the ring (clip 10, 32 bits) keeps the mean within ~1e-5 of FedAvg
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_a_flower_client_app_in_a_bulwark_job_gives_flowers_fedavg(tmp_path: Path) -> None:
    done, _, checkpoints, _ = _run("inmemory", tmp_path, app=True)
    assert done.status == "completed"
    for got, want in zip(checkpoints, _independent(), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
