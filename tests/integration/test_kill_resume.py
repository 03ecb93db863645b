"""kill -9 of a coordinator process mid-job: restarted on the same state, the job completes with
every round exactly once, and the interrupted round runs again as a new attempt."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROUNDS = 12

JOB = f"""
[job]
name = "kill-resume"
rounds = {ROUNDS}
seed = 3
[data]
dataset = "breast_cancer"
num_clients = 3
seed = 3
[model]
name = "logreg"
input_shape = [30]
num_classes = 2
[train]
epochs = 30
batch_size = 8
learning_rate = 0.05
[sampling]
min_clients = 3
wait_for_clients_s = 120
[round]
stage_timeout_s = 60
[evaluation]
every = 0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bulwark(log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "fl_core.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _completed_rounds(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_sigkill_then_restart_completes_every_round_once(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(JOB)
    db = tmp_path / "state.db"
    port = _free_port()
    coordinator_args = (
        "coordinator",
        str(job),
        "--state",
        str(db),
        "--address",
        f"127.0.0.1:{port}",
        "--quiet",
    )
    coordinator = _bulwark(tmp_path / "coordinator.log", *coordinator_args)
    clients = [
        _bulwark(
            tmp_path / f"client-{i}.log",
            "client",
            "--coordinator",
            f"127.0.0.1:{port}",
            "--job",
            str(job),
            "--partition",
            str(i),
            "--threads",
            "1",
            "--quiet",
        )
        for i in range(3)
    ]
    try:
        deadline = time.monotonic() + 120
        while _completed_rounds(db) < 2:
            assert coordinator.poll() is None, _tail(tmp_path / "coordinator.log")
            assert time.monotonic() < deadline, "the job did not get going"
            time.sleep(0.02)
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
        killed_after = _completed_rounds(db)
        assert killed_after < ROUNDS, "the job finished before the kill; make rounds longer"

        restarted = _bulwark(tmp_path / "restarted.log", *coordinator_args)
        restarted.wait(timeout=180)
        assert restarted.returncode == 0, _tail(tmp_path / "restarted.log")
        for i, c in enumerate(clients):
            c.wait(timeout=60)
            assert c.returncode == 0, _tail(tmp_path / f"client-{i}.log")
    finally:
        for proc in [coordinator, *clients]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    con = sqlite3.connect(db)
    rounds = [r[0] for r in con.execute("SELECT round FROM metrics ORDER BY round")]
    assert rounds == list(range(1, ROUNDS + 1))  # every round exactly once
    checkpoints = [r[0] for r in con.execute("SELECT round FROM checkpoints ORDER BY round")]
    assert checkpoints == list(range(0, ROUNDS + 1))
    status = con.execute("SELECT status FROM jobs").fetchone()[0]
    assert status == "completed"
    attempts = con.execute(
        "SELECT round, attempt, status FROM attempts ORDER BY round, attempt"
    ).fetchall()
    completed = [(r, a) for r, a, s in attempts if s == "completed"]
    assert [r for r, _ in completed] == list(range(1, ROUNDS + 1))
    interrupted = [(r, a) for r, a, s in attempts if s == "interrupted"]
    if interrupted:  # killed mid-round: that round ran again as a new attempt
        ((r, a),) = interrupted
        assert r == killed_after + 1 and (r, a + 1) in completed
    con.close()
