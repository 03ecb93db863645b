"""A data owner whose privacy budget runs out refuses at the right round, and keeps refusing
after its process is killed (kill -9) and started again: the ledger is the owner's memory, and the
restarted owner refuses the whole job before joining, since its next release cannot fit."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fl_core.client.ledger import PrivacyLedger
from fl_core.config import parse_job
from fl_core.dp.accounting import compose
from fl_core.dp.plan import make_plan

pytestmark = pytest.mark.integration

ROUNDS = 8
JOB = f"""
[job]
name = "budget-restart"
rounds = {ROUNDS}
seed = 5
[data]
dataset = "breast_cancer"
num_clients = 3
seed = 5
[model]
name = "logreg"
input_shape = [30]
num_classes = 2
[train]
epochs = 5
batch_size = 8
learning_rate = 0.05
[sampling]
min_clients = 3
wait_for_clients_s = 120
[round]
stage_timeout_s = 15
quorum_fraction = 0.5
[evaluation]
every = 0
[dp]
mode = "central"
epsilon = 8.0
clip = 1.0
"""
BUDGET = 4.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fl_core.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _refusals(db: Path, client: str) -> list[int]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            rows = con.execute(
                "SELECT round FROM events WHERE kind = 'refusal' AND client = ?", (client,)
            ).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []
    return [int(r[0]) for r in rows]


def test_budget_refusal_survives_a_killed_and_restarted_owner(tmp_path: Path) -> None:
    job_file = tmp_path / "job.toml"
    job_file.write_text(JOB)
    job = parse_job(JOB)
    plan = make_plan(job, dim=62)
    assert plan is not None
    affordable = max(
        k
        for k in range(ROUNDS + 1)
        if k == 0 or compose([plan.owner_event()] * k, delta=1e-5).epsilon <= BUDGET
    )
    assert 1 <= affordable < ROUNDS - 2
    policy = tmp_path / "policy.toml"
    policy.write_text(f"[policy]\nbudget_epsilon = {BUDGET}\n")
    roomy = tmp_path / "roomy.toml"
    roomy.write_text("[policy]\nbudget_epsilon = 100.0\n")
    db, port = tmp_path / "state.db", _free_port()
    target = f"127.0.0.1:{port}"
    coordinator = _start(
        tmp_path / "coordinator.log",
        "coordinator",
        str(job_file),
        "--state",
        str(db),
        "--address",
        target,
        "--quiet",
    )

    def owner(i: int, log: str) -> subprocess.Popen:
        return _start(
            tmp_path / log,
            "client",
            "--coordinator",
            target,
            "--job",
            str(job_file),
            "--partition",
            str(i),
            "--ledger",
            str(tmp_path / f"ledger-{i}.db"),
            "--policy",
            str(policy if i == 2 else roomy),
            "--threads",
            "1",
            "--quiet",
            "--identity",
            str(tmp_path / f"identity-{i}.pem"),
        )

    owners = [owner(i, f"owner-{i}.log") for i in range(3)]
    restarted = None
    try:
        deadline = time.monotonic() + 180
        while not _refusals(db, "client-2"):
            assert coordinator.poll() is None, (tmp_path / "coordinator.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "client-2 never refused"
            time.sleep(0.05)
        owners[2].send_signal(signal.SIGKILL)
        owners[2].wait()
        # Restarted, its ledger says the next round cannot fit: it refuses the job before joining,
        # in one line, instead of joining to refuse round after round.
        restarted = owner(2, "owner-2-restarted.log")
        restarted.wait(timeout=120)
        log = (tmp_path / "owner-2-restarted.log").read_text()
        assert restarted.returncode == 2, log[-2000:]
        assert "refusing the job before joining" in log and "Traceback" not in log
    finally:
        for proc in [coordinator, *owners, *([restarted] if restarted else [])]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    with PrivacyLedger(tmp_path / "ledger-2.db") as book:
        entries = book.entries("breast_cancer")
        assert [e.round for e in entries] == list(range(1, affordable + 1))
        assert entries[-1].epsilon_total <= BUDGET
    refused = sorted(set(_refusals(db, "client-2")))
    assert refused and refused[0] == affordable + 1
    with PrivacyLedger(tmp_path / "ledger-0.db") as book:  # the others were never limited
        assert len(book.entries("breast_cancer")) >= affordable + 1
