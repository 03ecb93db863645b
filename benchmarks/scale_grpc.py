"""How one coordinator scales with owners' connections over TLS on loopback (issue 11).

For 10, 100 and 500 owners, each with its own TLS connection (its own channel credentials, so
gRPC does not share one connection between them), long-polling for tasks, and a fixed update of
1e5 float32 parameters (no training), it runs a plain FedAvg job and measures, for the
coordinator process alone:

* rounds per minute (60 / the median round's seconds, round 1 excluded as warm-up);
* peak resident memory (``ru_maxrss``) and the resident memory before serving;
* CPU seconds (user + system) per round, over the measured rounds.

Each cell's coordinator is a fresh process (so its peak memory is its own); the owners are
asyncio clients in ``--workers`` separate processes, so their CPU is not the coordinator's. The
established TCP connections to the coordinator's port are counted once round 1 has committed.

    python benchmarks/scale_grpc.py                    # 10, 100, 500 owners, 3 measured rounds
    python benchmarks/scale_grpc.py --owners 10,100 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from fl_core.aggregators import create_aggregator
from fl_core.certs import CA_CERT, create_ca, issue_certificate
from fl_core.client.runtime import Client, ClientOptions
from fl_core.config import load_job, parse_job
from fl_core.coordinator.service import Coordinator
from fl_core.coordinator.store import Store
from fl_core.strategies import create_strategy
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve
from fl_core.types import EvaluateResult, FitConfig, FitResult, Weights

PARAMS = 100_000


def job_text(n: int, rounds: int) -> str:
    """A plain FedAvg job of ``rounds`` rounds that waits for all ``n`` owners."""
    return f"""
[job]
name = "scale-{n}"
rounds = {rounds}
seed = 1
[data]
dataset = "none"
num_clients = {n}
[model]
name = "fixed"
[sampling]
min_clients = {n}
wait_for_clients_s = 900
[round]
stage_timeout_s = 900
[evaluation]
every = 0
[limits]
max_payload_bytes = 1073741824
"""


class FixedTrainer:
    """Returns the global weights plus a constant: an update with no training behind it."""

    def initial_weights(self) -> Weights:
        return {"w": np.zeros(PARAMS, np.float32)}

    def fit(self, weights: Weights, config: FitConfig) -> FitResult:
        return FitResult(weights={"w": weights["w"] + np.float32(1e-3)}, num_examples=10)

    def evaluate(self, weights: Weights) -> EvaluateResult:
        return EvaluateResult(num_examples=1, loss=0.0)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mib() -> float:
    """The current resident memory of this process (from /proc), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _established(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (the server's ends)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def _committed(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def run_coordinator(n: int, rounds: int, workers: int) -> dict[str, Any]:
    """One cell, in this (fresh) process: serve over TLS, start the owners, run the job."""
    rss_before = _rss_mib()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        create_ca(tmp / "ca", name="scale CA")
        issued = issue_certificate(
            tmp / "ca", name="coordinator", out=tmp, sans=("localhost", "127.0.0.1")
        )
        text = job_text(n, rounds + 1)
        job = parse_job(text)
        job_file = tmp / "job.toml"
        job_file.write_text(text)
        db = tmp / "state.db"
        store = Store(db)
        coordinator = Coordinator(
            job,
            store=store,
            initial_weights=np.zeros(PARAMS, np.float32),
            strategy=create_strategy(job.strategy),
            aggregator=create_aggregator(job),
        )
        credentials = grpc.ssl_server_credentials(
            [(issued.key.read_bytes(), issued.cert.read_bytes())]
        )
        marks: dict[str, float] = {}

        async def watch(port: int) -> None:
            while _committed(db) < 1:
                await asyncio.sleep(0.02)
            marks["cpu_after_warmup"] = _cpu_s()
            marks["connections"] = _established(port)

        async def main() -> None:
            handle = await serve(
                coordinator, address="localhost:0", limits=job.limits, credentials=credentials
            )
            shares = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
            offsets = [sum(shares[:i]) for i in range(workers)]
            procs = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--role",
                    "owners",
                    "--port",
                    str(handle.port),
                    "--count",
                    str(count),
                    "--offset",
                    str(offset),
                    "--job",
                    str(job_file),
                    "--ca",
                    str(tmp / "ca" / CA_CERT),
                )  # fmt: skip
                for count, offset in zip(shares, offsets, strict=True)
                if count
            ]
            watcher = asyncio.create_task(watch(handle.port))
            try:
                await coordinator.run()
                marks["cpu_end"] = _cpu_s()
                for proc in procs:
                    await proc.wait()
            finally:
                watcher.cancel()
                await handle.stop(1.0)

        asyncio.run(main())
        seconds = [float(m["seconds"]) for m in store.metrics(job.job.name)][1:]
        clients = [int(m["num_clients"]) for m in store.metrics(job.job.name)]
        store.close()
    median = statistics.median(seconds)
    return {
        "owners": n,
        "connections": int(marks.get("connections", 0)),
        "clients_per_round": clients,
        "round_s": seconds,
        "median_round_s": median,
        "rounds_per_minute": 60.0 / median,
        "cpu_s_per_round": (marks["cpu_end"] - marks["cpu_after_warmup"]) / len(seconds),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_serving_mib": rss_before,
        "params": PARAMS,
        "rounds": len(seconds),
        "workers": workers,
    }


def run_owners(port: int, count: int, offset: int, job_file: Path, ca: Path) -> None:
    """``count`` long-polling owners, each over its own TLS connection."""
    job = load_job(job_file)
    root = ca.read_bytes()
    opts = ClientOptions(long_poll_s=30.0, backoff_initial_s=0.05)
    clients = [
        Client(name=f"owner-{offset + i}", job=job, trainer=FixedTrainer(), options=opts)
        for i in range(count)
    ]

    async def main() -> None:
        # A new credentials object per owner: gRPC shares a connection only between channels
        # with equal arguments, and credentials are compared by identity.
        transports = [
            GrpcClientTransport(
                f"localhost:{port}",
                limits=job.limits,
                credentials=grpc.ssl_channel_credentials(root_certificates=root),
                call_timeout=600.0,
            )
            for _ in clients
        ]
        await asyncio.gather(*(c.run(t) for c, t in zip(clients, transports, strict=True)))
        for t in transports:
            await t.close()

    asyncio.run(main())


def main() -> None:
    """Run the cells, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--owners", default="10,100,500")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per cell")
    parser.add_argument("--workers", type=int, default=4, help="owner processes per cell")
    parser.add_argument("--output", default="benchmarks/results/scale_grpc.json")
    parser.add_argument("--role", choices=["coordinator", "owners"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ca", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "owners":
        return run_owners(args.port, args.count, args.offset, args.job, args.ca)
    if args.role == "coordinator":
        print(json.dumps(run_coordinator(args.n, args.rounds, args.workers)))
        return None
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")
    header = (
        f"{'owners':>6} {'conns':>5} {'round s':>8} {'rounds/min':>10} {'CPU s/round':>11} "
        f"{'peak RSS MiB':>12} {'RSS before':>10}"
    )
    print(header)
    rows = []
    for n in [int(x) for x in args.owners.split(",")]:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--role", "coordinator", "--n", str(n),
             "--rounds", str(args.rounds), "--workers", str(args.workers)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["cell_wall_s"] = time.perf_counter() - start
        rows.append(row)
        print(
            f"{n:>6} {row['connections']:>5} {row['median_round_s']:>8.3f} "
            f"{row['rounds_per_minute']:>10.1f} {row['cpu_s_per_round']:>11.3f} "
            f"{row['peak_rss_mib']:>12.0f} {row['rss_before_serving_mib']:>10.0f}",
            flush=True,
        )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "cpu_count": os.cpu_count(), "loadavg_before": load}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return None


if __name__ == "__main__":
    main()
