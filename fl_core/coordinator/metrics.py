"""Prometheus metrics of a running coordinator (``bulwark coordinator --metrics-port``).

An event sink: it turns the coordinator's events into counters and gauges in its own registry
(never the process-global one, so two coordinators in one process do not collide) and serves them
over HTTP for Prometheus to scrape. Only counts and timings: nothing about any owner's data.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from .events import Event


class PrometheusMetrics:
    """Counters and gauges fed by coordinator events.

    Args:
        job: the job's name (a constant label on every series).
    """

    def __init__(self, job: str) -> None:
        self.registry = CollectorRegistry()
        labels = ("job",)
        r = self.registry
        self._rounds = Counter("bulwark_rounds_completed", "Rounds completed.", labels, registry=r)
        self._aborted = Counter(
            "bulwark_rounds_aborted", "Round attempts aborted.", labels, registry=r
        )
        self._round = Gauge("bulwark_round", "The last completed round.", labels, registry=r)
        self._seconds = Gauge(
            "bulwark_round_seconds", "Wall time of the last completed round.", labels, registry=r
        )
        self._clients = Gauge(
            "bulwark_round_clients", "Contributors to the last completed round.", labels, registry=r
        )
        self._down = Counter("bulwark_bytes_down", "Task payload bytes sent.", labels, registry=r)
        self._up = Counter("bulwark_bytes_up", "Result payload bytes received.", labels, registry=r)
        self._joined = Counter("bulwark_clients_joined", "Joins accepted.", labels, registry=r)
        self._job = job

    def __call__(self, event: Event) -> None:
        """Account one coordinator event."""
        job = self._job
        if event.kind == "round_completed":
            data = event.data
            self._rounds.labels(job).inc()
            self._round.labels(job).set(event.round)
            self._seconds.labels(job).set(float(data.get("seconds", 0.0)))  # type: ignore[arg-type]
            self._clients.labels(job).set(float(data.get("num_clients", 0)))  # type: ignore[arg-type]
            self._down.labels(job).inc(max(0, int(data.get("bytes_down", 0))))  # type: ignore[call-overload]
            self._up.labels(job).inc(max(0, int(data.get("bytes_up", 0))))  # type: ignore[call-overload]
        elif event.kind == "round_aborted":
            self._aborted.labels(job).inc()
        elif event.kind == "client_joined":
            self._joined.labels(job).inc()

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``address:port`` (0: a free port); return the port."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return int(server.server_port)
