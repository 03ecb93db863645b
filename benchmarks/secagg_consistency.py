"""The cost of SecAgg's consistency check: this tree against a tree without it, rounds alternated.

Each cell (vector length d, cohort n, graph, dropout rate) runs ``bulwark_round`` of
``benchmarks/secagg.py`` (n real clients and the coordinator, the unmasked sum checked exact) from
two source trees: this one, with the CONSISTENCY_CHECK stage and share commitments, and a
baseline tree given by ``--baseline`` (for example a worktree of the commit before the check:
``git worktree add --detach ../base 6c54736``). Every round runs in a fresh subprocess, and the two
trees alternate round by round, so that a change in machine load hits both sides alike; each side
reports the median over ``--repeats`` rounds of coordinator seconds (all stage methods) and of one
client's seconds (the median over the clients that ran every stage). ``+coord`` and ``+client``
are this tree's time over the baseline's, minus one.

The issue's target is at most 15% added to a round at n = 100, d = 1e6 (``--large``).

Run:  .venv/bin/python benchmarks/secagg_consistency.py --baseline ../base
      .venv/bin/python benchmarks/secagg_consistency.py --baseline ../base --large
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "benchmarks" / "results" / "secagg_consistency.json"
LARGE_OUTPUT = ROOT / "benchmarks" / "results" / "secagg_consistency_large.json"
QUICK_CELLS = [
    (100_000, n, graph, dropout)
    for n in (10, 50)
    for graph in ("full", "finder")
    for dropout in (0.0, 0.3)
]
LARGE_CELLS = [(1_000_000, 100, graph, 0.1) for graph in ("finder", "full")]

_WORKER = """
import json, sys
tree, d, n, graph, dropout, seed = sys.argv[1:7]
sys.path[:0] = [tree, tree + "/benchmarks"]
import secagg
params = secagg.params_for(int(n), graph)
row = secagg.bulwark_round(params, int(d), float(dropout), seed=int(seed))
print(json.dumps({k: row[k] for k in ("server_s", "client_s", "wall_s")}))
"""


def one_round(tree: Path, cell: tuple[int, int, str, float], seed: int) -> dict[str, float]:
    """Run one round of ``cell`` with the code of ``tree`` in a fresh interpreter."""
    d, n, graph, dropout = cell
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, str(tree), str(d), str(n), graph, str(dropout), str(seed)],
        check=True,
        capture_output=True,
        text=True,
        cwd=tree,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="tree without the check")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per side and cell (median)")
    parser.add_argument("--large", action="store_true", help="n = 100, d = 1e6 (the issue's cell)")
    parser.add_argument("--output", type=Path, help="JSON results path")
    args = parser.parse_args(argv)
    baseline = args.baseline.resolve()
    if not (baseline / "mpc" / "secagg" / "server.py").is_file():
        parser.error(f"--baseline {baseline} holds no mpc/secagg/server.py")
    cells = LARGE_CELLS if args.large else QUICK_CELLS
    output = args.output or (LARGE_OUTPUT if args.large else OUTPUT)
    began = time.perf_counter()
    rows = []
    print(
        f"{'d':>8} {'n':>4} {'graph':>6} {'drop':>5} | {'base coord':>10} {'coord':>8} "
        f"{'+coord':>7} | {'base client':>11} {'client':>8} {'+client':>7}",
        flush=True,
    )
    for cell in cells:
        runs: dict[str, list[dict[str, float]]] = {"baseline": [], "consistency": []}
        for seed in range(args.repeats):
            sides = [("baseline", baseline), ("consistency", ROOT)]
            if seed % 2:  # alternate which side goes first
                sides.reverse()
            for name, tree in sides:
                runs[name].append(one_round(tree, cell, seed))
        med = {
            name: {k: statistics.median(r[k] for r in rs) for k in ("server_s", "client_s")}
            for name, rs in runs.items()
        }
        row: dict[str, Any] = {
            "d": cell[0],
            "n": cell[1],
            "graph": cell[2],
            "dropout": cell[3],
            "repeats": args.repeats,
            "baseline": med["baseline"],
            "consistency": med["consistency"],
            "added_coord": med["consistency"]["server_s"] / med["baseline"]["server_s"] - 1,
            "added_client": med["consistency"]["client_s"] / med["baseline"]["client_s"] - 1,
            "runs": runs,
        }
        rows.append(row)
        print(
            f"{cell[0]:>8} {cell[1]:>4} {cell[2]:>6} {cell[3]:>5.0%} | "
            f"{med['baseline']['server_s']:>10.4f} {med['consistency']['server_s']:>8.4f} "
            f"{row['added_coord']:>+7.1%} | {med['baseline']['client_s']:>11.4f} "
            f"{med['consistency']['client_s']:>8.4f} {row['added_client']:>+7.1%}",
            flush=True,
        )
    report = {
        "benchmark": "secagg_consistency",
        "command": " ".join(
            [".venv/bin/python", "benchmarks/secagg_consistency.py", *(argv or sys.argv[1:])]
        ),
        "baseline_tree": str(baseline),
        "baseline_commit": _commit(baseline),
        "tree_commit": _commit(ROOT),
        "elapsed_s": time.perf_counter() - began,
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "rows": rows,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"elapsed: {report['elapsed_s']:.0f} s; results written to {output}")
    return 0


def _commit(tree: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
