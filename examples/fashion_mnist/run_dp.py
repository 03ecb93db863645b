"""Run the Fashion-MNIST DP experiments and record what each reaches.

    python examples/fashion_mnist/run_dp.py --mode fedsgd --epsilon 2.93
    python examples/fashion_mnist/run_dp.py --mode dpsgd --epsilon 1 2.93 8

For each (mode, epsilon) it writes the job file it ran (the mode's template with ``dp.epsilon``
replaced), runs it with ``bulwark simulate`` in memory, and appends a line to
``runs/fmnist-dp/results.jsonl``: test accuracy (final and best evaluated), the epsilon the
coordinator reports (central and distributed modes) or the largest owner ledger total, rounds,
and wall time.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = {
    "fedsgdshort": "dp_fedsgd_short.toml",
    "dpsgd": "dp_dpsgd.toml",
    "distributed": "dp_distributed.toml",
    "fedsgd": "dp_fedsgd.toml",
}


def run(mode: str, epsilon: float, out_root: Path) -> dict[str, object]:
    text = (HERE / TEMPLATES[mode]).read_text()
    text = re.sub(r"(?m)^epsilon = .*$", f"epsilon = {epsilon}", text)
    tag = f"eps{epsilon:g}".replace(".", "p")
    text = re.sub(r'(?m)^name = "(fashion-mnist-dp-[a-z]+)"$', rf'name = "\1-{tag}"', text)
    out = out_root / f"{mode}-{tag}"
    out.mkdir(parents=True, exist_ok=True)
    job = out / "job.toml"
    job.write_text(text)
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "fl_core.cli", "simulate", str(job), "--output", str(out), "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.time() - started
    metrics = (
        json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    )
    rounds = metrics.get("rounds", [])
    evaluated = [r for r in rounds if isinstance(r.get("accuracy"), float)]
    owners = [max(r["owner_epsilon"].values()) for r in rounds if r.get("owner_epsilon")]
    row = {
        "mode": mode,
        "target_epsilon": epsilon,
        "status": metrics.get("status", f"exit {done.returncode}: {done.stderr[-300:]}"),
        "rounds": len(rounds),
        "final_accuracy": evaluated[-1]["accuracy"] if evaluated else None,
        "best_accuracy": max(r["accuracy"] for r in evaluated) if evaluated else None,
        "epsilon_reported": rounds[-1].get("epsilon") if rounds else None,
        "max_owner_epsilon": owners[-1] if owners else None,
        "delta": 1e-5,
        "wall_s": round(wall, 1),
        "command": f"python examples/fashion_mnist/run_dp.py --mode {mode} --epsilon {epsilon:g}",
    }
    with open(out_root / "results.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(TEMPLATES), required=True)
    parser.add_argument("--epsilon", type=float, nargs="+", default=[2.93])
    parser.add_argument("--output", type=Path, default=Path("runs/fmnist-dp"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for eps in args.epsilon:
        row = run(args.mode, eps, args.output)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
