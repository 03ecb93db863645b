"""Liveness over real loopback gRPC: bytes still moving are not silence.

The stage driver drops a client that holds a task and has had no open call for
``SILENCE_GRACE_S``. A task's chunks keep arriving after the coordinator handed the task out (and,
from flow-control buffers, after the coordinator has sent the last one), so the coordinator counts
its streaming as an open call and the client transport opens a hold as soon as it learns the
task's id: otherwise a client on a slow link (or one of a hundred simulated clients sharing one
process) is taken for dead while its download is running.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import job_text, make_clients, make_coordinator, parse, run_federation

from fl_core.coordinator import driver
from fl_core.coordinator.store import Store
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve
from fl_core.types import EvaluateResult, FitConfig, FitResult, Weights

pytestmark = pytest.mark.integration

PARAMS = 4_000_000  # 16 MB: more than HTTP/2 flow control lets the server buffer ahead
READ_DELAY_S = 0.01  # per 64 KiB message: the download takes about 2.5 s
GRACE_S = 0.3


class BigTrainer:
    """A model of PARAMS float32 values whose update is a constant (no compute)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def initial_weights(self) -> Weights:
        return {"w": np.zeros(PARAMS, np.float32)}

    def fit(self, weights: Weights, config: FitConfig) -> FitResult:
        return FitResult(weights={"w": weights["w"] + np.float32(1e-3)}, num_examples=10)

    def evaluate(self, weights: Weights) -> EvaluateResult:
        return EvaluateResult(num_examples=10, loss=0.0)


class SlowReads:
    """A PullTask call whose reader takes READ_DELAY_S per message, like a slow link."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def read(self) -> Any:
        await asyncio.sleep(READ_DELAY_S)
        return await self._call.read()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def slow_transport(address: str, limits: Any) -> GrpcClientTransport:
    transport = GrpcClientTransport(address, limits=limits)
    pull = transport._pull
    transport._pull = lambda request, **kw: SlowReads(pull(request, **kw))
    return transport


def test_a_client_whose_task_is_still_streaming_is_not_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver, "SILENCE_GRACE_S", GRACE_S)
    monkeypatch.setattr(driver, "LIVENESS_CHECK_S", 0.05)
    job = parse(
        job_text(
            rounds=1,
            clients=2,
            min_clients=2,
            extra="[evaluation]\nevery = 0\n[limits]\nchunk_bytes = 65536\n",
        )
    )
    trainers = [BigTrainer(i) for i in range(2)]
    store = Store(tmp_path / "state.db")
    coordinator = make_coordinator(job, store, trainers[0])  # type: ignore[arg-type]
    clients = make_clients(job, trainers)  # type: ignore[arg-type]

    async def main():
        handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
        transports = [slow_transport(f"127.0.0.1:{handle.port}", job.limits) for _ in clients]
        try:
            return await run_federation(job, coordinator, clients, transports)
        finally:
            await handle.stop()

    done = asyncio.run(main())
    metrics = store.metrics(job.job.name)
    attempts = store.attempts(job.job.name)
    store.close()

    assert done.status == "completed", done.reason
    assert [a["status"] for a in attempts] == ["completed"]  # no attempt lost to a false drop
    assert metrics[0]["num_clients"] == 2
    assert metrics[0]["dropped"] == {}
    # The downloads really outlasted the grace period several times over.
    assert metrics[0]["seconds"] > 3 * GRACE_S
