"""The same FedAvg job on Flower's simulation and on Bulwark, side by side: time and accuracy.

One Flower ``NumPyClient`` (softmax regression on Fashion-MNIST, 7,850 float32 parameters, a
fixed number of full-batch gradient steps per round, so local training is deterministic) is
trained over the same IID split (same seed), the same initial model and the same number of
rounds:

- on Flower 1.42's simulation engine (``flwr.simulation.run_simulation``, Ray backend, one CPU
  per virtual client on a 2-CPU Ray instance), with Flower's FedAvg;
- on Bulwark, the very same client class wrapped in ``fl_core.flower.NumPyClientTrainer``, with
  Bulwark's coordinator in memory and over real loopback gRPC (clients in a second process).

Then the same with secure aggregation on both sides: Flower's ``SecAggPlusWorkflow`` with
``secaggplus_mod`` against Bulwark's ``aggregation.kind = "secagg"`` (SecAgg+ graph), with
Flower's ``num_shares`` and ``reconstruction_threshold`` set to Bulwark's degree + 1 and
threshold for the same cohort.

Time per round: the median over the measured rounds of the wall time from the strategy's
``configure_fit`` to the end of its ``aggregate_fit`` (Flower), and of the coordinator's round time
(Bulwark: sample, stages, aggregation, strategy, SQLite checkpoint); round 1 is a warm-up on both
sides (Ray actors start, imports) and is not counted. Local training is the same numpy code
with one BLAS thread per client on both sides (Ray's setting for a one-CPU client); Flower runs
the clients in two Ray worker processes, Bulwark as threads of one process. Accuracy: the final
global model on the full Fashion-MNIST test split (10,000 images), computed the same way for both.

    python benchmarks/vs_flower.py                  # 10 and 100 clients, 4 rounds (3 measured)
    python benchmarks/vs_flower.py --quick          # 10 clients, 3 rounds

Target (issue #13): Bulwark's round at most a quarter of Flower's, FedAvg and SecAgg, at 10 and
100 clients. Needs ``pip install 'bulwark[bench]'`` (Flower with Ray) and Fashion-MNIST
(``scripts/setup --data``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fl_core.aggregators import create_aggregator
from fl_core.client.runtime import Client, ClientOptions
from fl_core.config import JobConfig, parse_job
from fl_core.coordinator.service import Coordinator
from fl_core.coordinator.store import Store
from fl_core.data import PartitionConfig, load_dataset, split_for_clients
from fl_core.flower import NumPyClientTrainer
from fl_core.strategies import create_strategy
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve
from fl_core.transport.inmemory import InMemoryTransport
from fl_core.types import Layout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from round_overhead import _round_seconds  # noqa: E402  (the shared way to read round times)

STEPS = 5
LR = 0.5
CLASSES = 10
FEATURES = 784
SPLIT_SEED = 7
NAMES = ["W", "b"]


# --- the one Flower client both sides run -------------------------------------------------------


def _softmax_client_class() -> type:
    from flwr.client import NumPyClient

    class SoftmaxClient(NumPyClient):  # type: ignore[misc]
        """Softmax regression by full-batch gradient descent: deterministic local training."""

        def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
            self.x = x.reshape(len(x), -1).astype(np.float32)
            self.onehot = np.eye(CLASSES, dtype=np.float32)[y]

        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return [np.zeros((FEATURES, CLASSES), np.float32), np.zeros(CLASSES, np.float32)]

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            w, b = parameters[0].astype(np.float32), parameters[1].astype(np.float32)
            for _ in range(STEPS):
                p = _softmax(self.x @ w + b)
                g = (p - self.onehot) / len(self.x)
                w = (w - LR * (self.x.T @ g)).astype(np.float32)
                b = (b - LR * g.sum(axis=0)).astype(np.float32)
            return [w, b], len(self.x), {}

        def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            loss, acc = _score(parameters, self.x, self.onehot.argmax(axis=1))
            return loss, len(self.x), {"accuracy": acc}

    return SoftmaxClient


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _score(parameters: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    p = _softmax(x.reshape(len(x), -1) @ parameters[0] + parameters[1])
    loss = float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)).mean())
    return loss, float((p.argmax(axis=1) == y).mean())


def load_split(n: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """The IID split of Fashion-MNIST's training images over ``n`` clients; the test split."""
    data = load_dataset("fashion_mnist")
    parts = split_for_clients(
        data, PartitionConfig(num_clients=n), rng=np.random.default_rng(SPLIT_SEED)
    )
    return [(p.x_train, p.y_train) for p in parts], data.x_test, data.y_test


def accuracy(flat: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    layout = Layout(names=tuple(NAMES), shapes=((FEATURES, CLASSES), (CLASSES,)))
    w = layout.unflatten(np.asarray(flat, np.float32))
    return _score([w["W"], w["b"]], x_test, y_test)[1]


# --- Bulwark ----------------------------------------------------------------------------------


def job_text(n: int, rounds: int, secagg: bool) -> str:
    text = f"""
[job]
name = "vs-flower-{n}-{"secagg" if secagg else "fedavg"}"
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
"""
    if secagg:
        text += '[aggregation]\nkind = "secagg"\n[secagg]\nclip = 100.0\n'
    return text


def _bulwark_clients(job: JobConfig, split: list[tuple[np.ndarray, np.ndarray]]) -> list[Client]:
    cls = _softmax_client_class()
    opts = ClientOptions(long_poll_s=30.0, backoff_initial_s=0.05)
    return [
        Client(
            name=f"c{i}", job=job, trainer=NumPyClientTrainer(cls(x, y), names=NAMES), options=opts
        )
        for i, (x, y) in enumerate(split)
    ]


def _coordinator(job: JobConfig, store: Store) -> Coordinator:
    return Coordinator(
        job,
        store=store,
        initial_weights=np.zeros(FEATURES * CLASSES + CLASSES, np.float32),
        strategy=create_strategy(job.strategy),
        aggregator=create_aggregator(job),
    )


def bulwark_inmemory(split: Any, rounds: int, secagg: bool, tmp: Path) -> dict[str, Any]:
    job = parse_job(job_text(len(split), rounds, secagg))
    store = Store(tmp / f"mem-{job.job.name}.db")
    coordinator = _coordinator(job, store)
    clients = _bulwark_clients(job, split)

    async def main() -> None:
        await asyncio.gather(
            coordinator.run(), *(c.run(InMemoryTransport(coordinator)) for c in clients)
        )

    asyncio.run(main())
    return _bulwark_result(store, job)


def bulwark_grpc(split: Any, rounds: int, secagg: bool, tmp: Path) -> dict[str, Any]:
    text = job_text(len(split), rounds, secagg)
    job = parse_job(text)
    job_file = tmp / f"{job.job.name}.toml"
    job_file.write_text(text)
    store = Store(tmp / f"grpc-{job.job.name}.db")
    coordinator = _coordinator(job, store)

    async def main() -> None:
        handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
        worker = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", str(handle.port), "--job", str(job_file)
        )
        try:
            await coordinator.run()
            await worker.wait()
        finally:
            await handle.stop(1.0)

    asyncio.run(main())
    return _bulwark_result(store, job)


def _grpc_worker(port: int, job_file: Path) -> None:
    from fl_core.config import load_job

    threadpool_limits(limits=1)  # one BLAS thread per client, as Ray gives each Flower client
    job = load_job(job_file)
    split, _, _ = load_split(job.data.num_clients)
    clients = _bulwark_clients(job, split)

    async def main() -> None:
        transports = [GrpcClientTransport(f"127.0.0.1:{port}", limits=job.limits) for _ in clients]
        await asyncio.gather(*(c.run(t) for c, t in zip(clients, transports, strict=True)))
        for t in transports:
            await t.close()

    asyncio.run(main())


def _bulwark_result(store: Store, job: JobConfig) -> dict[str, Any]:
    metrics = store.metrics(job.job.name)
    final = store.checkpoint(job.job.name, job.job.rounds)
    out = {
        "round_s": _round_seconds(store, job),
        "final": final,
        "contributors": [int(m["num_clients"]) for m in metrics],
    }
    if job.aggregation.kind == "secagg":
        out["degree"] = int(metrics[0]["secagg_degree"])
        out["threshold"] = int(metrics[0]["secagg_threshold"])
    store.close()
    return out


# --- Flower -----------------------------------------------------------------------------------


def flower_run(
    split: Any, rounds: int, secagg: tuple[int, int] | None, cpus: int
) -> dict[str, Any]:
    """Flower's simulation of the same job; ``secagg`` = (num_shares, threshold) or None."""
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    cls = _softmax_client_class()
    n = len(split)
    initial = cls(*split[0]).get_parameters({})

    class TimedFedAvg(FedAvg):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.start: dict[int, float] = {}
            self.seconds: dict[int, float] = {}
            self.final: list[np.ndarray] = []

        def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
            self.start[server_round] = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            if failures:
                raise RuntimeError(f"Flower round {server_round}: {len(failures)} failures")
            out = super().aggregate_fit(server_round, results, failures)
            self.final = parameters_to_ndarrays(out[0])
            self.seconds[server_round] = time.perf_counter() - self.start[server_round]
            return out

    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_available_clients=n,
        initial_parameters=ndarrays_to_parameters(initial),
    )

    def client_fn(context):  # type: ignore[no-untyped-def]
        x, y = split[int(context.node_config["partition-id"])]
        return cls(x, y).to_client()

    if secagg is None:
        server = ServerApp(
            server_fn=lambda context: ServerAppComponents(
                strategy=strategy, config=ServerConfig(num_rounds=rounds)
            )
        )
        client = ClientApp(client_fn=client_fn)
    else:
        from flwr.client.mod import secaggplus_mod
        from flwr.server import LegacyContext
        from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

        shares, threshold = secagg
        server = ServerApp()

        @server.main()  # type: ignore[misc]
        def _main(grid, context):  # type: ignore[no-untyped-def]
            legacy = LegacyContext(
                context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy
            )
            workflow = DefaultWorkflow(
                fit_workflow=SecAggPlusWorkflow(
                    num_shares=shares, reconstruction_threshold=threshold, max_weight=100_000
                )
            )
            workflow(grid, legacy)

        client = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=n,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "include_dashboard": False},
        },
    )
    flat = np.concatenate([a.reshape(-1) for a in strategy.final]).astype(np.float32)
    return {"round_s": [strategy.seconds[r] for r in range(2, rounds + 1)], "final": flat}


# --- the table ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,100")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run (round 1: warm-up)")
    parser.add_argument("--quick", action="store_true", help="10 clients, 3 rounds")
    parser.add_argument("--ray-cpus", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--output", default="benchmarks/results/vs_flower.json")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return _grpc_worker(args.worker, args.job)
    if args.quick:
        args.clients, args.rounds = "10", 3
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (round 1 is a warm-up)")
    # Ray runs each Flower client with OMP_NUM_THREADS = its num_cpus (1); Bulwark's simulated
    # clients, threads of one process, get the same one BLAS thread each.
    threadpool_limits(limits=1)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    warnings.simplefilter("ignore")
    rows = []
    header = (
        f"{'clients':>7} {'aggregation':>11} {'flower s':>9} {'bulwark mem s':>13} "
        f"{'bulwark gRPC s':>14} {'mem/flower':>10} {'gRPC/flower':>11} "
        f"{'acc flower':>10} {'acc bulwark':>11}"
    )
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(c) for c in args.clients.split(",")]:
            split, x_test, y_test = load_split(n)
            for kind in ("fedavg", "secagg"):
                secagg = kind == "secagg"
                mem = bulwark_inmemory(split, args.rounds, secagg, Path(tmp))
                rpc = bulwark_grpc(split, args.rounds, secagg, Path(tmp))
                params = None
                if secagg:  # Flower's graph as Bulwark's: degree neighbours + self, same t
                    params = (min(n, mem["degree"] + 1), mem["threshold"])
                flower = flower_run(split, args.rounds, params, args.ray_cpus)
                f_s = statistics.median(flower["round_s"])
                m_s = statistics.median(mem["round_s"])
                g_s = statistics.median(rpc["round_s"])
                row = {
                    "clients": n,
                    "aggregation": kind,
                    "parameters": FEATURES * CLASSES + CLASSES,
                    "rounds": args.rounds,
                    "measured_rounds": args.rounds - 1,
                    "flower_round_s": f_s,
                    "bulwark_inmemory_round_s": m_s,
                    "bulwark_grpc_round_s": g_s,
                    "flower_rounds_s": flower["round_s"],
                    "bulwark_inmemory_rounds_s": mem["round_s"],
                    "bulwark_grpc_rounds_s": rpc["round_s"],
                    "inmemory_over_flower": m_s / f_s,
                    "grpc_over_flower": g_s / f_s,
                    "accuracy_flower": accuracy(flower["final"], x_test, y_test),
                    "accuracy_bulwark_inmemory": accuracy(mem["final"], x_test, y_test),
                    "accuracy_bulwark_grpc": accuracy(rpc["final"], x_test, y_test),
                    "max_abs_param_diff": float(np.abs(flower["final"] - mem["final"]).max()),
                    "bulwark_inmemory_contributors": mem["contributors"],
                    "bulwark_grpc_contributors": rpc["contributors"],
                }
                if params is not None:
                    row["secagg_shares_flower"], row["secagg_threshold"] = params
                    row["secagg_degree_bulwark"] = mem["degree"]
                rows.append(row)
                lines.append(
                    f"{n:>7} {kind:>11} {f_s:>9.3f} {m_s:>13.3f} {g_s:>14.3f} "
                    f"{m_s / f_s:>10.3f} {g_s / f_s:>11.3f} "
                    f"{row['accuracy_flower']:>10.4f} {row['accuracy_bulwark_grpc']:>11.4f}"
                )
                print(header, *lines, sep="\n", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(
        json.dumps({"rows": rows, "cpu_count": os.cpu_count(), "ray_cpus": args.ray_cpus}, indent=2)
        + "\n"
    )
    print(f"wrote {args.output}")
    if any(not math.isfinite(r["flower_round_s"]) for r in rows):
        raise SystemExit("a Flower run produced no round time")


if __name__ == "__main__":
    main()
