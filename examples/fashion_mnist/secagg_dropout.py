"""Fashion-MNIST with secure aggregation over real loopback gRPC, two institutions killed mid-round.

    python examples/fashion_mnist/secagg_dropout.py [--output runs/fmnist-secagg-dropout]

The coordinator serves ``secagg.toml`` on a loopback port; ten ``bulwark client`` processes dial
in. When round 2 has finished its share-keys stage, two of them are killed with SIGKILL: they
hold shares of the others' secrets and their masked inputs never arrive, so the survivors must
reveal the dead clients' masking-key shares for the round to complete. The job goes on with the
eight survivors. The script prints the accuracy per round and writes ``summary.json`` beside the
job's ``metrics.json``; compare with the plain run of ``job.toml``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VICTIMS = (3, 7)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stage_done(db: Path, rnd: int, stage: str) -> bool:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = con.execute(
                "SELECT 1 FROM stages WHERE round = ? AND stage = ?", (rnd, stage)
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return row is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/fmnist-secagg-dropout"))
    args = parser.parse_args()
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    db = out / "state.db"
    if db.exists():
        sys.exit(f"{db} exists: use a fresh --output folder")
    job = HERE / "secagg.toml"
    address = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "fl_core.cli"]
    started = time.time()
    logs = {}

    def spawn(name: str, *argv: str) -> subprocess.Popen[bytes]:
        logs[name] = open(out / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        return subprocess.Popen([*cli, *argv], env=env, stdout=logs[name], stderr=subprocess.STDOUT)

    coordinator = spawn(
        "coordinator",
        "coordinator",
        str(job),
        "--state",
        str(db),
        "--address",
        address,
        "--output",
        str(out),
        "--quiet",
    )
    clients = [
        spawn(
            f"client-{i}",
            "client",
            "--coordinator",
            address,
            "--job",
            str(job),
            "--partition",
            str(i),
            "--threads",
            "1",
            "--quiet",
        )
        for i in range(10)
    ]
    killed_at = None
    try:
        while not _stage_done(db, 2, "secagg.share_keys"):
            if coordinator.poll() is not None:
                sys.exit(f"the coordinator stopped; see {out / 'coordinator.log'}")
            time.sleep(0.05)
        for i in VICTIMS:
            clients[i].send_signal(signal.SIGKILL)
        killed_at = time.time() - started
        print(
            f"killed client-{VICTIMS[0]} and client-{VICTIMS[1]} after round 2's share-keys "
            f"stage ({killed_at:.1f} s)",
            flush=True,
        )
        coordinator.wait()
    finally:
        for proc in [coordinator, *clients]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for fh in logs.values():
            fh.close()
    metrics = json.loads((out / "metrics.json").read_text())
    rounds = metrics["rounds"]
    for r in rounds:
        print(
            f"round {r['round']:>2}: {r['num_clients']} clients, accuracy {r['accuracy']:.4f}, "
            f"dropped {r.get('dropped', {})}"
        )
    summary = {
        "status": metrics["status"],
        "killed": [f"client-{i}" for i in VICTIMS],
        "killed_after_s": killed_at,
        "wall_s": round(time.time() - started, 1),
        "final_accuracy": rounds[-1]["accuracy"] if rounds else None,
        "clients_per_round": [r["num_clients"] for r in rounds],
        "command": "python examples/fashion_mnist/secagg_dropout.py",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
