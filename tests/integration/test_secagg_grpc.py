"""Secure aggregation through the stage driver over real loopback gRPC, with clients killed
mid-round: the round completes with the survivors, and the aggregate is their FedAvg."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from support import LinearTrainer, job_text, make_clients, make_coordinator, parse

from fl_core.coordinator.events import Event
from fl_core.coordinator.store import Store
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve
from fl_core.types import Layout
from mpc import Stage

pytestmark = pytest.mark.integration

SECAGG = """
[aggregation]
kind = "secagg"
[secagg]
dropout_rate = 0.3
corrupt_rate = 0.05
clip = 10.0
max_weight = 1000
"""


def _oracle(trainers: list[LinearTrainer], rnd: int, names: list[str]) -> np.ndarray:
    fits = [f for t in trainers if f"client-{t.index}" in names for f in t.fits if f[0] == rnd]
    layout = Layout.of(fits[0][1])
    start = layout.flatten(fits[0][1])
    total = sum(n for *_, n in fits)
    mean = sum(
        (layout.flatten(new).astype(np.float64) - start) * (n / total) for _, _, new, n in fits
    )
    return (start + mean).astype(np.float32)


@pytest.mark.parametrize(
    ("full_graph", "kill_after"),
    [
        (False, "secagg.share_keys"),
        (True, "secagg.share_keys"),
        (True, "secagg.masked_input"),
    ],
    ids=["secagg+", "secagg", "secagg-killed-at-consistency-check"],
)
def test_secure_aggregation_survives_clients_killed_mid_round(
    tmp_path: Path, full_graph: bool, kill_after: str
) -> None:
    """Killed after sharing keys, the victims' inputs are missing from the sum; killed after
    sending their masked inputs (so at the consistency check), their inputs are in it."""
    extra = SECAGG + f"full_graph = {str(full_graph).lower()}\n"
    job = parse(job_text(rounds=3, clients=8, min_clients=6, quorum=0.5, timeout=20.0, extra=extra))
    trainers = [LinearTrainer(i) for i in range(8)]
    store = Store(tmp_path / "s.db")
    victims = ["client-2", "client-5"]
    tasks: dict[str, asyncio.Task] = {}
    transports: dict[str, GrpcClientTransport] = {}
    killed = asyncio.Event()

    def on_event(event: Event) -> None:
        data = event.data
        if (
            event.kind == "stage_progress"
            and event.round == 2
            and not killed.is_set()
            and data["stage"] == kill_after
            and data["answered"] == data["sent"]
        ):
            killed.set()
            for name in victims:  # "kill -9": the task dies, its connection with it
                tasks[name].cancel()

    coordinator = make_coordinator(job, store, trainers[0])
    coordinator._events = on_event
    clients = make_clients(job, trainers)

    async def main():
        handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
        for client in clients:
            transports[client.name] = GrpcClientTransport(f"127.0.0.1:{handle.port}")
            tasks[client.name] = asyncio.create_task(client.run(transports[client.name]))
        while len(coordinator.registry) < 8:  # round 1 with everyone
            await asyncio.sleep(0.01)
        try:
            done = await coordinator.run()
            results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        finally:
            for t in transports.values():
                await t.close()
            await handle.stop()
        return done, dict(zip(tasks, results, strict=True))

    done, results = asyncio.run(main())

    assert done.status == "completed", done.reason
    assert killed.is_set()
    assert all(isinstance(results[v], asyncio.CancelledError) for v in victims), {
        v: repr(results[v]) for v in victims
    }
    metrics = store.metrics(job.job.name)
    stages = [f"secagg.{s.value}" for s in Stage]
    dropped_at = stages[stages.index(kill_after) + 1]
    summed = 6 if kill_after == "secagg.share_keys" else 8
    assert [m["num_clients"] for m in metrics] == [8, summed, 6]
    assert metrics[1]["secagg_dropped"] == 2
    assert set(metrics[1]["dropped"]) == {dropped_at}
    # The dead clients were noticed (no open call for 3 s): the stage did not wait for its 20 s
    # deadline.
    assert metrics[1]["stage_seconds"][dropped_at] < 10.0
    for rnd, m in enumerate(metrics, start=1):
        np.testing.assert_allclose(
            store.checkpoint(job.job.name, rnd), _oracle(trainers, rnd, m["clients"]), atol=5e-5
        )
    if full_graph:
        assert metrics[0]["secagg_degree"] == 7
    store.close()
