"""Owner Prometheus metrics (``bulwark client --metrics-port``): its audit entries, counted."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

from support import LinearTrainer, job_text, make_coordinator, parse, run_federation

from fl_core.client.metrics import OwnerMetrics
from fl_core.client.runtime import Client, ClientOptions
from fl_core.coordinator.store import Store
from fl_core.transport.inmemory import InMemoryTransport


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    pattern = r'^(bulwark_owner_\w+)_total\{job="([^"]*)",owner="([^"]*)"\} (\S+)$'
    return {m[1]: float(m[4]) for m in re.finditer(pattern, text, flags=re.M)}


def test_owner_metrics_count_tasks_refusals_releases_and_bytes() -> None:
    # Prepare
    metrics = OwnerMetrics("hospital-a", "job-a")

    # Execute: the entries a participant records in one job.
    metrics("job_accepted", "local", {"rounds": 2})
    metrics("joined", "sent", {"client_id": "c1"})
    for attempt in (1, 2):
        metrics("task", "received", {"attempt": attempt, "bytes": 1000})
    metrics("release", "sent", {"attempt": 1, "bytes": 400, "fields": ["update"]})
    metrics("refusal", "refused", {"attempt": 2, "code": "budget"})
    metrics("coordinator_refused", "refused", {})
    metrics("task", "received", {"bytes": True})  # not a size: counted as a task, no bytes
    values = _scrape(metrics.serve(0))

    # Assert
    assert values == {
        "bulwark_owner_tasks_received": 3.0,
        "bulwark_owner_tasks_refused": 1.0,
        "bulwark_owner_releases": 1.0,
        "bulwark_owner_bytes_received": 2000.0,
        "bulwark_owner_bytes_released": 400.0,
        "bulwark_owner_joins": 1.0,
        "bulwark_owner_job_refusals": 1.0,
    }


def test_a_clients_observer_sees_every_task_and_release_of_a_job(tmp_path: Path) -> None:
    # Prepare: three owners, each with its own exporter, in a two-round in-memory job.
    job = parse(job_text(rounds=2, clients=3, min_clients=3))
    trainers = [LinearTrainer(i) for i in range(3)]
    store = Store(tmp_path / "s.db")
    coordinator = make_coordinator(job, store, trainers[0])
    exporters = [OwnerMetrics(f"client-{i}", job.job.name) for i in range(3)]
    clients = [
        Client(
            name=f"client-{t.index}",
            job=job,
            trainer=t,
            options=ClientOptions(long_poll_s=5.0, backoff_initial_s=0.05),
            observer=exporters[t.index],
        )
        for t in trainers
    ]

    # Execute
    done = asyncio.run(
        run_federation(job, coordinator, clients, [InMemoryTransport(coordinator)] * 3)
    )
    scraped = [_scrape(e.serve(0)) for e in exporters]

    # Assert: each owner answered every task it was sent, and the bytes are the payloads'.
    assert done.status == "completed"
    for client, values in zip(clients, scraped, strict=True):
        assert values["bulwark_owner_joins"] == 1.0
        assert values["bulwark_owner_tasks_received"] == client.tasks_done >= 2
        assert values["bulwark_owner_releases"] == client.tasks_done
        assert values["bulwark_owner_tasks_refused"] == 0.0
        assert values["bulwark_owner_bytes_received"] > 0
        assert values["bulwark_owner_bytes_released"] > 0
    store.close()
