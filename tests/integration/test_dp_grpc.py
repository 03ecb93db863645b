"""Distributed DP through real secure aggregation over loopback gRPC: the coordinator's noisy sum
is exactly the modular sum of what the owners' Skellam encoders produced."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from support import LinearTrainer, job_text, make_coordinator, parse

import fl_core.aggregators.secure_sum as secure_sum
from fl_core.client.ledger import PrivacyLedger
from fl_core.client.runtime import Client, ClientOptions
from fl_core.coordinator.store import Store
from fl_core.dp.plan import make_plan
from fl_core.dp.skellam import skellam_decode
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve

pytestmark = pytest.mark.integration

DISTRIBUTED = """
[aggregation]
kind = "secagg"
[secagg]
dropout_rate = 0.2
[dp]
mode = "distributed"
epsilon = 5.0
clip = 1.0
bits = 20
"""


def test_skellam_sum_through_secagg_is_bit_exact(tmp_path: Path, monkeypatch) -> None:
    job = parse(job_text(rounds=1, clients=5, min_clients=5, extra=DISTRIBUTED))
    trainers = [LinearTrainer(i) for i in range(5)]
    recorded: list[np.ndarray] = []
    lock = threading.Lock()
    seeds: list[bytes] = []
    real_encode = secure_sum.skellam_encode

    def recording_encode(update, **kwargs):
        ring = real_encode(update, **kwargs)
        with lock:
            recorded.append(ring.copy())
            seeds.append(kwargs["rotation_seed"])
        return ring

    monkeypatch.setattr(secure_sum, "skellam_encode", recording_encode)
    clients = []
    for t in trainers:
        ledger = tmp_path / f"ledger-{t.index}.db"
        with PrivacyLedger(ledger) as book:
            book.set_cap("synthetic", epsilon=5.01, delta=1e-5)
        clients.append(
            Client(
                name=f"client-{t.index}",
                job=job,
                trainer=t,
                ledger=ledger,
                options=ClientOptions(long_poll_s=5.0),
            )
        )
    store = Store(tmp_path / "s.db")
    coordinator = make_coordinator(job, store, trainers[0])

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
    assert done.status == "completed", done.reason

    # The plaintext modular sum of the five encoded vectors, decoded as the coordinator does.
    assert len(recorded) == 5 and len(set(seeds)) == 1
    plain_sum = np.zeros_like(recorded[0])
    for ring in recorded:
        plain_sum += ring  # uint32 arithmetic wraps modulo 2^32, as the ring does
    plan = make_plan(job, dim=5)
    assert plan is not None and plan.skellam is not None
    noisy = skellam_decode(plain_sum, config=plan.skellam, rotation_seed=seeds[0])
    mean = (noisy.astype(np.float64) * (1.0 / 5)).astype(np.float32)
    start = store.checkpoint(job.job.name, 0)
    expected = (start + mean).astype(np.float32)
    assert store.checkpoint(job.job.name, 1).tobytes() == expected.tobytes()

    metrics = store.metrics(job.job.name)[0]
    assert metrics["dp_mode"] == "distributed"
    assert 0 < metrics["epsilon"] <= 5.0
    assert set(metrics["owner_epsilon"]) == {f"client-{i}" for i in range(5)}
    # Each owner's ledger holds the charge (at the calibration point, an upper bound).
    for i in range(5):
        with PrivacyLedger(tmp_path / f"ledger-{i}.db") as book:
            (entry,) = book.entries("synthetic")
            assert entry.mechanism == "dp-fedavg-skellam"
            assert entry.epsilon_total >= metrics["epsilon"] - 1e-9
    store.close()


def test_owner_refuses_a_coordinator_that_lowers_the_noise(tmp_path: Path) -> None:
    """A task that states less noise than the job's plan is refused by the owner."""
    from fl_core.dp.plan import check_plan, plan_fields
    from fl_core.errors import PolicyRefused
    from fl_core.payload import Payload

    job = parse(job_text(rounds=2, clients=5, min_clients=5, extra=DISTRIBUTED))
    plan = make_plan(job, dim=5)
    assert plan is not None
    fields = plan_fields(plan)
    check_plan(plan, Payload(fields))
    fields["dp.local_mu"] = float(fields["dp.local_mu"]) / 2
    with pytest.raises(PolicyRefused, match="dp.local_mu"):
        check_plan(plan, Payload(fields))
