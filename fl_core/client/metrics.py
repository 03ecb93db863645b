"""Prometheus metrics of a data owner (``bulwark client --metrics-port``).

An observer of the owner's audit entries (:class:`fl_core.client.runtime.Participant`): it counts
tasks received, refused and answered (releases), and the bytes of each direction, in its own
registry (never the process-global one), and serves them over HTTP for Prometheus to scrape.
Only counts and sizes, the same ones the owner's audit log holds: nothing about the data, the
update or the reasons of a refusal beyond its kind.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, start_http_server

__all__ = ["OwnerMetrics"]


def _bytes(detail: Mapping[str, object]) -> int:
    value = detail.get("bytes", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class OwnerMetrics:
    """Counters fed by an owner's audit entries.

    Args:
        owner: the owner's enrolled name (a constant label on every series).
        job: the job's name (a constant label on every series).
    """

    def __init__(self, owner: str, job: str) -> None:
        self.registry = CollectorRegistry()
        labels = ("owner", "job")
        r = self.registry
        self._tasks = Counter("bulwark_owner_tasks_received", "Tasks received.", labels, registry=r)
        self._refused = Counter(
            "bulwark_owner_tasks_refused", "Tasks refused (each with a reason in the audit log).",
            labels, registry=r,
        )  # fmt: skip
        self._released = Counter(
            "bulwark_owner_releases", "Tasks answered: results released.", labels, registry=r
        )
        self._down = Counter(
            "bulwark_owner_bytes_received", "Task payload bytes received.", labels, registry=r
        )
        self._up = Counter(
            "bulwark_owner_bytes_released", "Result payload bytes released.", labels, registry=r
        )
        self._joins = Counter("bulwark_owner_joins", "Joins accepted.", labels, registry=r)
        self._job_refusals = Counter(
            "bulwark_owner_job_refusals", "Jobs or coordinators refused.", labels, registry=r
        )
        self._labels = (owner, job)
        for counter in (self._tasks, self._refused, self._released, self._down, self._up,
                        self._joins, self._job_refusals):  # fmt: skip
            counter.labels(*self._labels)  # every series exists (at 0) from the start

    def __call__(self, kind: str, direction: str, detail: Mapping[str, object]) -> None:
        """Account one audit entry (the :data:`fl_core.client.runtime.Observer` signature)."""
        labels = self._labels
        if kind == "task":
            self._tasks.labels(*labels).inc()
            self._down.labels(*labels).inc(_bytes(detail))
        elif kind == "refusal":
            self._refused.labels(*labels).inc()
        elif kind == "release":
            self._released.labels(*labels).inc()
            self._up.labels(*labels).inc(_bytes(detail))
        elif kind == "joined":
            self._joins.labels(*labels).inc()
        elif direction == "refused":
            self._job_refusals.labels(*labels).inc()

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``address:port`` (0: a free port); return the port."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return int(server.server_port)
