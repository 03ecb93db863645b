"""Round overhead of the coordinator: in memory and over loopback gRPC, against bare grpcio.

For model sizes d (float32 parameters) and cohorts of n clients whose "training" returns a fixed
update (no compute), it measures the time per round of a plain FedAvg job (stage driver, codec,
chunked transfer, aggregation, strategy, SQLite checkpoint) over the in-memory transport and over
real loopback gRPC, and sets the bytes per second of the gRPC round beside a bare grpcio transfer
of the same bytes (n concurrent streams, each downloading and uploading d*4 bytes in 1 MiB chunks)
measured in the same run. Clients run in a separate process, like real data owners.

    python benchmarks/round_overhead.py                 # full grid (1e5, 1e6, 1e7) x (10, 100)
    python benchmarks/round_overhead.py --quick         # 1e5 and 1e6, 10 clients

Targets (issue #2): the gRPC round moves updates at >= 0.5x the bare rate; a round of 10 clients
with 1e5 parameters takes <= 0.025 s in memory and <= 0.05 s over gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from fl_core.aggregators import create_aggregator
from fl_core.client.runtime import Client, ClientOptions
from fl_core.config import parse_job
from fl_core.coordinator.service import Coordinator
from fl_core.coordinator.store import Store
from fl_core.strategies import create_strategy
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import channel_options, serve
from fl_core.transport.inmemory import InMemoryTransport
from fl_core.types import EvaluateResult, FitResult

CHUNK = 1 << 20


def job_text(d: int, n: int, rounds: int) -> str:
    return f"""
[job]
name = "overhead-{d}-{n}"
rounds = {rounds}
seed = 1
[data]
dataset = "none"
num_clients = {n}
[model]
name = "fixed"
[sampling]
min_clients = {n}
wait_for_clients_s = 600
[round]
stage_timeout_s = 600
[evaluation]
every = 0
[limits]
max_payload_bytes = 1073741824
"""


class FixedTrainer:
    """Returns the global weights plus a constant: an update with no training behind it."""

    def __init__(self, d: int) -> None:
        self.d = d

    def initial_weights(self):
        return {"w": np.zeros(self.d, np.float32)}

    def fit(self, weights, config):
        return FitResult(weights={"w": weights["w"] + np.float32(1e-3)}, num_examples=10)

    def evaluate(self, weights):
        return EvaluateResult(num_examples=1, loss=0.0)


def _clients(job, d: int, n: int) -> list[Client]:
    opts = ClientOptions(long_poll_s=30.0, backoff_initial_s=0.05)
    return [Client(name=f"c{i}", job=job, trainer=FixedTrainer(d), options=opts) for i in range(n)]


def _coordinator(job, d: int, store: Store) -> Coordinator:
    return Coordinator(
        job,
        store=store,
        initial_weights=np.zeros(d, np.float32),
        strategy=create_strategy(job.strategy),
        aggregator=create_aggregator(job),
    )


def _round_seconds(store: Store, job) -> list[float]:
    return [float(m["seconds"]) for m in store.metrics(job.job.name)][1:]  # round 1 is warm-up


def run_inmemory(d: int, n: int, rounds: int, tmp: Path) -> list[float]:
    job = parse_job(job_text(d, n, rounds + 1))
    store = Store(tmp / f"mem-{d}-{n}.db")
    coordinator = _coordinator(job, d, store)
    clients = _clients(job, d, n)

    async def main() -> None:
        await asyncio.gather(
            coordinator.run(), *(c.run(InMemoryTransport(coordinator)) for c in clients)
        )

    asyncio.run(main())
    out = _round_seconds(store, job)
    store.close()
    return out


def run_grpc(d: int, n: int, rounds: int, tmp: Path) -> list[float]:
    text = job_text(d, n, rounds + 1)
    job = parse_job(text)
    job_file = tmp / f"job-{d}-{n}.toml"
    job_file.write_text(text)
    store = Store(tmp / f"grpc-{d}-{n}.db")
    coordinator = _coordinator(job, d, store)

    async def main() -> None:
        handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--worker",
            "grpc",
            "--port",
            str(handle.port),
            "--d",
            str(d),
            "--n",
            str(n),
            "--job",
            str(job_file),
        )
        try:
            await coordinator.run()
            await worker.wait()
        finally:
            await handle.stop(1.0)

    asyncio.run(main())
    out = _round_seconds(store, job)
    store.close()
    return out


def _grpc_worker(port: int, d: int, n: int, job_file: Path) -> None:
    from fl_core.config import load_job

    job = load_job(job_file)
    clients = _clients(job, d, n)

    async def main() -> None:
        transports = [GrpcClientTransport(f"127.0.0.1:{port}", limits=job.limits) for _ in clients]
        await asyncio.gather(*(c.run(t) for c, t in zip(clients, transports, strict=True)))
        for t in transports:
            await t.close()

    asyncio.run(main())


# --- bare grpcio: the same bytes, no framework --------------------------------------------------


def _bare_handlers(d: int):
    blob = os.urandom(CHUNK)
    total = d * 4

    async def download(request, context):
        sent = 0
        while sent < total:
            size = min(CHUNK, total - sent)
            yield blob if size == CHUNK else blob[:size]
            sent += size

    async def upload(request_iterator, context):
        received = 0
        async for chunk in request_iterator:
            received += len(chunk)
        return received.to_bytes(8, "little")

    ident = lambda b: b  # noqa: E731
    return grpc.method_handlers_generic_handler(
        "bare.Bytes",
        {
            "Download": grpc.unary_stream_rpc_method_handler(download, ident, ident),
            "Upload": grpc.stream_unary_rpc_method_handler(upload, ident, ident),
        },
    )


def run_bare(d: int, n: int, rounds: int) -> list[float]:
    async def main() -> list[float]:
        server = grpc.aio.server(options=channel_options(parse_job(job_text(d, n, 1)).limits))
        server.add_generic_rpc_handlers((_bare_handlers(d),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--worker",
            "bare",
            "--port",
            str(port),
            "--d",
            str(d),
            "--n",
            str(n),
            "--repeats",
            str(rounds + 1),
            stdout=subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        await server.stop(1.0)
        return json.loads(out)[1:]

    return asyncio.run(main())


def _bare_worker(port: int, d: int, n: int, repeats: int) -> None:
    payload = os.urandom(CHUNK)
    total = d * 4

    async def one(channel) -> None:
        download = channel.unary_stream("/bare.Bytes/Download")
        upload = channel.stream_unary("/bare.Bytes/Upload")
        got = 0
        async for chunk in download(b""):
            got += len(chunk)

        async def chunks():
            sent = 0
            while sent < total:
                size = min(CHUNK, total - sent)
                yield payload if size == CHUNK else payload[:size]
                sent += size

        await upload(chunks())

    async def main() -> list[float]:
        options = channel_options(parse_job(job_text(d, n, 1)).limits)
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(n)
        ]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            await asyncio.gather(*(one(c) for c in channels))
            times.append(time.perf_counter() - start)
        for c in channels:
            await c.close()
        return times

    print(json.dumps(asyncio.run(main())))


# --- the table ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1e5,1e6,1e7")
    parser.add_argument("--clients", default="10,100")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per cell")
    parser.add_argument("--quick", action="store_true", help="1e5 and 1e6, 10 clients, 3 rounds")
    parser.add_argument("--output", default="benchmarks/results/round_overhead.json")
    parser.add_argument("--worker", choices=["grpc", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "grpc":
        return _grpc_worker(args.port, args.d, args.n, args.job)
    if args.worker == "bare":
        return _bare_worker(args.port, args.d, args.n, args.repeats)
    if args.quick:
        args.sizes, args.clients, args.rounds = "1e5,1e6", "10", 3
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    cohorts = [int(c) for c in args.clients.split(",")]
    rows = []
    header = (
        f"{'params':>9} {'clients':>7} {'in-mem s':>9} {'gRPC s':>8} {'bare s':>8} "
        f"{'gRPC GB/s':>9} {'bare GB/s':>9} {'ratio':>6}"
    )
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for d in sizes:
            for n in cohorts:
                mem = statistics.median(run_inmemory(d, n, args.rounds, Path(tmp)))
                rpc = statistics.median(run_grpc(d, n, args.rounds, Path(tmp)))
                bare = statistics.median(run_bare(d, n, args.rounds))
                moved = 2 * n * d * 4  # model down and update up, for every client
                row = {
                    "params": d,
                    "clients": n,
                    "inmemory_s": mem,
                    "grpc_s": rpc,
                    "bare_s": bare,
                    "grpc_GBps": moved / rpc / 1e9,
                    "bare_GBps": moved / bare / 1e9,
                    "ratio": bare / rpc,
                    "bytes_per_round": moved,
                    "rounds": args.rounds,
                }
                rows.append(row)
                print(
                    f"{d:>9.0e} {n:>7} {mem:>9.4f} {rpc:>8.4f} {bare:>8.4f} "
                    f"{row['grpc_GBps']:>9.2f} {row['bare_GBps']:>9.2f} {row['ratio']:>6.2f}",
                    flush=True,
                )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(
        json.dumps({"rows": rows, "cpu_count": os.cpu_count()}, indent=2) + "\n"
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
