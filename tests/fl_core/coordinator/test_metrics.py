"""Observability: Prometheus metrics over HTTP, the gRPC health service, JSON log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import LinearTrainer, job_text, make_coordinator, parse

from fl_core.coordinator.events import Event
from fl_core.coordinator.metrics import PrometheusMetrics
from fl_core.coordinator.store import Store
from fl_core.logs import LogFormat, setup_logging
from fl_core.transport.grpc_server import SERVICE, serve


def test_prometheus_metrics_follow_the_events() -> None:
    metrics = PrometheusMetrics("job-a")
    metrics(Event("client_joined", data={"client": "c", "role": "owner"}))
    for rnd in (1, 2):
        data = {"seconds": 0.25 * rnd, "num_clients": 3, "bytes_down": 100, "bytes_up": 40}
        metrics(Event("round_completed", rnd, data))
    metrics(Event("round_aborted", 3, {"attempt": 1, "reason": "quorum"}))
    port = metrics.serve(0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert 'bulwark_rounds_completed_total{job="job-a"} 2.0' in text
    assert 'bulwark_round_seconds{job="job-a"} 0.5' in text
    assert 'bulwark_bytes_down_total{job="job-a"} 200.0' in text
    assert 'bulwark_rounds_aborted_total{job="job-a"} 1.0' in text
    assert 'bulwark_clients_joined_total{job="job-a"} 1.0' in text


@pytest.mark.integration
def test_the_coordinator_answers_the_grpc_health_service(tmp_path: Path) -> None:
    job = parse(job_text(clients=2, min_clients=2))
    coordinator = make_coordinator(job, Store(tmp_path / "s.db"), LinearTrainer(0))

    async def main() -> list[int]:
        handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                return [
                    (await stub.Check(health_pb2.HealthCheckRequest(service=name))).status
                    for name in ("", SERVICE)
                ]
        finally:
            await handle.stop()

    assert asyncio.run(main()) == [health_pb2.HealthCheckResponse.SERVING] * 2


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(verbose=False, quiet=False, log_format=LogFormat.JSON)
    try:
        logging.getLogger("bulwark.test").warning("round %d aborted: %s", 3, "quorum")
    finally:
        setup_logging(verbose=False, quiet=False)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "bulwark.test"
    assert entry["message"] == "round 3 aborted: quorum"
