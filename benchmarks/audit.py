"""Audit-log benchmark: what one hash-chained, durable entry costs, beside the ledger's charge.

Side by side in one process, in a fresh folder per repeat (on the benchmark's ``--dir``):

* ``sqlite``: a bare SQLite insert with the same durability (WAL, ``synchronous=FULL``, one
  ``BEGIN IMMEDIATE`` transaction per row): the floor any durable log pays;
* ``audit``: :meth:`fl_core.audit.AuditLog.append` of a typical owner entry (a release:
  round, stage, protections, epsilon, a few details): the floor plus reading the last hash,
  canonical JSON, SHA-256 and the checks that keep data out;
* ``ledger``: :meth:`fl_core.client.ledger.PrivacyLedger.charge` of a central-DP round (what a DP
  owner already pays per release: chain verification, composition over every earlier charge,
  two durable inserts). Composition grows with the ledger, so this method charges only the
  first ``--ledger-entries`` rounds (default 10, a short job); it is context, not a baseline.

Each repeat appends ``--entries`` rows with each method (the order rotates every repeat); the
table shows medians over repeats of the time per row, and each ratio is the median of the
per-repeat ratios to ``sqlite``. ``verify`` is the time to verify a log of ``--entries`` rows,
per row.

Run:  .venv/bin/python benchmarks/audit.py [--repeats 5] [--entries 100] [--ledger-entries 10]
      [--dir DIR] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fl_core.audit import AuditLog, verify_audit  # noqa: E402
from fl_core.client.ledger import PrivacyLedger  # noqa: E402
from fl_core.dp.accounting import GaussianEvent  # noqa: E402


def bare_sqlite(folder: Path, n: int) -> float:
    db = sqlite3.connect(folder / "bare.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    body = json.dumps({"kind": "release", "round": 1, "detail": {"bytes": 1234}})
    started = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t(seq, body) VALUES(?, ?)", (i + 1, body))
        db.execute("COMMIT")
    seconds = time.perf_counter() - started
    db.close()
    return seconds / n


def audit_append(folder: Path, n: int) -> float:
    with AuditLog(folder / "audit.db", party="client-0", role="owner") as log:
        started = time.perf_counter()
        for i in range(n):
            log.append(
                "release", direction="sent", peer="coordinator", job="bench", manifest="ab" * 32,
                round=i + 1, stage="secagg.masked_input",
                protections=("aggregation:secagg", "secagg:malicious", "dp:distributed", "tls"),
                epsilon=0.01 * i,
                detail={"attempt": 1, "bytes": 812_345, "fields": ["masked", "weight"]},
            )  # fmt: skip
        return (time.perf_counter() - started) / n


def ledger_charge(folder: Path, n: int) -> float:
    with PrivacyLedger(folder / "ledger.db") as book:
        book.set_cap("data", epsilon=1e9, delta=1e-5)
        event = GaussianEvent(noise_multiplier=1.0, sample_rate=1.0, steps=1)
        started = time.perf_counter()
        for i in range(n):
            book.charge(job="bench", round=i + 1, dataset="data", mechanism="central", event=event)
        return (time.perf_counter() - started) / n


METHODS: dict[str, Callable[[Path, int], float]] = {
    "sqlite": bare_sqlite,
    "audit": audit_append,
    "ledger": ledger_charge,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--ledger-entries", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/audit.json")
    args = parser.parse_args()
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    ratios: dict[str, list[float]] = {m: [] for m in METHODS}
    verify: list[float] = []
    names = list(METHODS)
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            folder = Path(tmp)
            order = names[r % len(names) :] + names[: r % len(names)]
            this = {
                m: METHODS[m](folder, args.ledger_entries if m == "ledger" else args.entries)
                for m in order
            }
            started = time.perf_counter()
            verify_audit(folder / "audit.db")
            verify.append((time.perf_counter() - started) / args.entries)
        for m in names:
            times[m].append(this[m])
            ratios[m].append(this[m] / this["sqlite"])
    rows = {
        m: {
            "ms_per_row": statistics.median(times[m]) * 1e3,
            "ratio_to_sqlite": statistics.median(ratios[m]),
        }
        for m in names
    }
    print(f"{'method':<8} {'ms / row':>10} {'x sqlite':>9}")
    for m, row in rows.items():
        print(f"{m:<8} {row['ms_per_row']:10.3f} {row['ratio_to_sqlite']:9.2f}")
    verify_us = statistics.median(verify) * 1e6
    print(f"verify   {verify_us:10.1f} us / row")
    result = {
        "benchmark": "audit",
        "repeats": args.repeats,
        "entries": args.entries,
        "ledger_entries": args.ledger_entries,
        "dir": str(args.dir or tempfile.gettempdir()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "methods": rows,
        "verify_us_per_row": verify_us,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
