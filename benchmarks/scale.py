"""Scale on one machine: one in-memory SecAgg+ round at 100, 1,000 and 10,000 clients.

Each cell runs one job of one round in a fresh subprocess (so peak memory is the cell's own): n
clients whose "training" returns a fixed update of d float32 parameters (no compute), secure
aggregation (`kind = "secagg"`, the finder picks SecAgg+ for these n) with the job's dropout
tolerance 10%, and 10% of the clients refusing their masked input (they drop after sharing keys,
so the coordinator rebuilds their masking keys and removes their pairwise masks: the expensive
path). It reports the round's own seconds (the coordinator's metric), the wall time of the whole
run (coordinator plus every client, from start to the end of the round) and the peak resident
memory of the process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). A cell that does not end
within ``--timeout`` seconds is killed and recorded as "timed out after X s".

With ``--baseline PATH`` every cell also runs with ``PYTHONPATH=PATH`` (a checkout of another
commit, e.g. main), side by side in the same run, so machine load affects both.

    python benchmarks/scale.py                                  # 100, 1,000, 10,000 clients
    python benchmarks/scale.py --baseline /work/wt/base-scale   # and the same cells on main
    python benchmarks/scale.py --clients 100 1000 --repeats 3

Targets (issue 13): a 1,000-client SecAgg+ round in <= 10 s of wall time, 10,000 in <= 60 s, peak
memory under 4 GiB at 10,000, on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def job_text(n: int, dropout: float) -> str:
    """The job of one cell: one SecAgg round over n clients, no evaluation."""
    return f"""
[job]
name = "scale-{n}"
rounds = 1
seed = 1
[data]
dataset = "none"
num_clients = {n}
[model]
name = "fixed"
[sampling]
min_clients = {n}
wait_for_clients_s = 3600
[round]
stage_timeout_s = 3600
[evaluation]
every = 0
[aggregation]
kind = "secagg"
[secagg]
dropout_rate = {dropout}
[limits]
max_payload_bytes = 1073741824
"""


def run_cell(n: int, d: int, dropout: float) -> dict[str, Any]:
    """Run one round in this process and return its figures (the child side of a cell)."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from round_overhead import FixedTrainer

    from fl_core.aggregators import create_aggregator
    from fl_core.client.runtime import Client, ClientOptions
    from fl_core.config import parse_job
    from fl_core.coordinator.service import Coordinator
    from fl_core.coordinator.store import Store
    from fl_core.errors import PolicyRefused
    from fl_core.strategies import create_strategy
    from fl_core.transport.inmemory import InMemoryTransport

    logging.getLogger("bulwark").setLevel(logging.ERROR)  # one line per refusing client otherwise
    job = parse_job(job_text(n, dropout))

    class Dropper(Client):
        """A client that refuses its masked input: it drops after sharing its keys."""

        drop = False

        def handle(self, task: Any) -> Any:
            if self.drop and task.header.stage.endswith("masked_input"):
                raise PolicyRefused("simulated dropout")
            return super().handle(task)

    start = time.perf_counter()
    options = ClientOptions(long_poll_s=30.0, backoff_initial_s=0.05)
    clients = [
        Dropper(name=f"c{i}", job=job, trainer=FixedTrainer(d), options=options) for i in range(n)
    ]
    for client in clients[: int(n * dropout)]:
        client.drop = True
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "scale.db")
        coordinator = Coordinator(
            job,
            store=store,
            initial_weights=np.zeros(d, np.float32),
            strategy=create_strategy(job.strategy),
            aggregator=create_aggregator(job),
        )

        async def main() -> None:
            await asyncio.gather(
                coordinator.run(), *(c.run(InMemoryTransport(coordinator)) for c in clients)
            )

        asyncio.run(main())
        wall = time.perf_counter() - start
        metrics = store.metrics(job.job.name)
        store.close()
    if not metrics:
        raise SystemExit(f"the round of {n} clients did not complete")
    row = metrics[0]
    return {
        "round_s": float(row["seconds"]),
        "wall_s": wall,
        "round_metrics": {k: v for k, v in row.items() if isinstance(v, int | float)},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared)."""
    return [round(v, 2) for v in os.getloadavg()]


def spawn(n: int, d: int, dropout: float, timeout: float, pythonpath: Path) -> dict[str, Any] | str:
    """Run one cell in a fresh subprocess; return its figures or why it has none."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    command = [sys.executable, __file__, "--cell", str(n), "--d", str(d)]
    command += ["--dropout", str(dropout)]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:g} s"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"failed (exit {done.returncode}): {tail[0]}"
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--d", type=float, default=1e5, help="parameters per update")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=1, help="fresh runs per cell (median)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--baseline", type=Path, help="checkout run side by side (e.g. main)")
    parser.add_argument("--label", default="this tree", help="name of this tree in the table")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    parser.add_argument("--cell", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    d = int(args.d)
    if args.cell is not None:
        print(json.dumps(run_cell(args.cell, d, args.dropout)))
        return

    trees = [(args.label, ROOT)]
    if args.baseline is not None:
        trees.append(("baseline " + str(args.baseline), args.baseline.resolve()))
    rows: list[dict[str, Any]] = []
    header = f"{'tree':<32} {'clients':>8} {'round s':>9} {'wall s':>9} {'peak MiB':>9}  load"
    print(header)
    for n in args.clients:
        for label, path in trees:
            runs: list[dict[str, Any]] = []
            failure: str | None = None
            load = load_average()
            for _ in range(args.repeats):
                result = spawn(n, d, args.dropout, args.timeout, path)
                if isinstance(result, str):
                    failure = result
                    break
                runs.append(result)
            row: dict[str, Any] = {"tree": label, "clients": n, "d": d, "dropout": args.dropout}
            row |= {"repeats": len(runs), "load_before": load, "load_after": load_average()}
            if failure is not None:
                row["result"] = failure
                print(f"{label[:32]:<32} {n:>8} {failure}  {load}")
            else:
                for key in ("round_s", "wall_s", "peak_rss_mib"):
                    row[key] = statistics.median(r[key] for r in runs)
                    row[key + "_all"] = [r[key] for r in runs]
                row["round_metrics"] = runs[0]["round_metrics"]
                print(
                    f"{label[:32]:<32} {n:>8} {row['round_s']:>9.2f} {row['wall_s']:>9.2f} "
                    f"{row['peak_rss_mib']:>9.0f}  {load}"
                )
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"rows": rows, "cpu_count": os.cpu_count(), "command": " ".join(sys.argv)}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
