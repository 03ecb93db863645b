"""Chaos over mutual TLS (issue 11): random SIGKILLs of the coordinator and of its clients.

A coordinator and eight client processes run a plain-mean FedAvg job over mTLS on loopback, with
certificates from ``fl_core.certs`` and a signed roster (``fl_core.federation``). For a fixed
time, a seeded schedule SIGKILLs the coordinator or a client and restarts it at once with the
same state file, identity key and certificate. Then:

* the job completes and every client exits 0;
* every round is committed exactly once (one ``metrics`` row, one checkpoint and one completed
  attempt per round, read from the coordinator's SQLite state);
* wherever a round started from the same model as a fault-free run's round and aggregated the
  same clients, its checkpoint is the fault-free one, byte for byte (the plain-mean path is
  deterministic: each owner's training is seeded by the job's seed, the round and its name).

The job asks for all eight clients in every round (``min_clients = 8``, ``quorum_fraction = 1``),
so a round that loses a client aborts and runs again as a new attempt once the client is back:
every committed round then has the fault-free cohort, and the comparison covers every round and
the final model. A retried attempt that trained differently, a round committed twice or an
update counted from a dead attempt would all show up as a different checkpoint.

The fault-free run is ``bulwark simulate`` in memory with the same job. No timing is asserted;
the timeouts are generous so that a loaded CI machine only makes it slower.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_core.certs import CA_CERT, create_ca, issue_certificate
from fl_core.federation import (
    Member,
    Roster,
    cert_fingerprint,
    raw_public,
    write_private_pem,
    write_public_pem,
)

pytestmark = pytest.mark.integration

CLIENTS = 8
ROUNDS = 20
CHAOS_S = 12.0
"""How long kills go on after the job got going (seconds)."""
SEED = 11
"""Seeds the kill schedule."""

JOB = f"""
[job]
name = "chaos"
rounds = {ROUNDS}
seed = 5
[data]
dataset = "breast_cancer"
num_clients = {CLIENTS}
seed = 5
[model]
name = "logreg"
input_shape = [30]
num_classes = 2
[train]
epochs = 20
batch_size = 16
learning_rate = 0.05
[sampling]
min_clients = {CLIENTS}
wait_for_clients_s = 240
[round]
stage_timeout_s = 60
quorum_fraction = 1.0
max_attempts = 100
[evaluation]
every = 0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Party:
    """One process of the federation, restartable with the same arguments (and so state)."""

    name: str
    args: tuple[str, ...]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            out.write(f"\n--- start {self.starts} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fl_core.cli", *self.args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _rows(db: Path, query: str) -> list[tuple[object, ...]]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return list(con.execute(query).fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return []


def _committed(db: Path) -> int:
    rows = _rows(db, "SELECT COUNT(*) FROM metrics")
    return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]


def _finished(db: Path) -> bool:
    return _rows(db, "SELECT status FROM jobs") == [("completed",)]


def _federation(tmp: Path) -> dict[str, Path]:
    """A CA, certificates for the coordinator and the clients, identity keys and a roster."""
    create_ca(tmp / "ca", name="chaos CA")
    names = [f"client-{i}" for i in range(CLIENTS)]
    members = []
    for name in ["coordinator", *names]:
        sans = ("localhost", "127.0.0.1") if name == "coordinator" else ()
        issued = issue_certificate(tmp / "ca", name=name, out=tmp / "certs", sans=sans)
        key = Ed25519PrivateKey.generate()
        write_private_pem(tmp / f"{name}.id.pem", key)
        members.append(
            Member(
                name=name,
                role="coordinator" if name == "coordinator" else "owner",
                key=raw_public(key.public_key()),
                cert_sha256=cert_fingerprint(issued.cert.read_bytes()),
            )
        )
    authority = Ed25519PrivateKey.generate()
    roster, signature = Roster.sign("chaos-clinics", members, authority)
    (tmp / "roster.json").write_text(roster.to_json(signature))
    write_public_pem(tmp / "authority.pub.pem", authority.public_key())
    return {"roster": tmp / "roster.json", "authority": tmp / "authority.pub.pem"}


def test_random_sigkills_of_coordinator_and_clients_over_mtls(tmp_path: Path) -> None:
    # Prepare: the federation, the job, and the fault-free run's checkpoints.
    pins = _federation(tmp_path)
    job = tmp_path / "job.toml"
    job.write_text(JOB)
    free = subprocess.run(
        [sys.executable, "-m", "fl_core.cli", "simulate", str(job), "--output",
         str(tmp_path / "free"), "--quiet"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert free.returncode == 0, free.stderr[-3000:]
    free_db = tmp_path / "free" / "state.db"
    free_sha = dict(_rows(free_db, "SELECT round, sha256 FROM checkpoints"))
    free_clients = {
        r: sorted(json.loads(str(d))["clients"])
        for r, d in _rows(free_db, "SELECT round, data FROM metrics")
    }
    assert all(len(c) == CLIENTS for c in free_clients.values())

    db = tmp_path / "state.db"
    address = f"localhost:{_free_port()}"
    certs = tmp_path / "certs"
    roster = ("--federation", str(pins["roster"]), "--authority", str(pins["authority"]))
    coordinator = Party(
        "coordinator",
        ("coordinator", str(job), "--state", str(db), "--address", address,
         "--tls-cert", str(certs / "coordinator.pem"), "--tls-key", str(certs / "coordinator.key"),
         "--tls-client-ca", str(tmp_path / "ca" / CA_CERT),
         "--identity", str(tmp_path / "coordinator.id.pem"), "--name", "coordinator",
         *roster, "--quiet"),
        tmp_path / "coordinator.log",
    )  # fmt: skip
    clients = [
        Party(
            f"client-{i}",
            (
                "client",
                "--coordinator",
                address,
                "--job",
                str(job),
                "--partition",
                str(i),
                "--name",
                f"client-{i}",
                "--identity",
                str(tmp_path / f"client-{i}.id.pem"),
                "--tls-ca",
                str(tmp_path / "ca" / CA_CERT),
                "--tls-cert",
                str(certs / f"client-{i}.pem"),
                "--tls-key",
                str(certs / f"client-{i}.key"),
                *roster,
                "--threads",
                "1",
                "--connect-timeout",
                "120",
                "--quiet",
            ),
            tmp_path / f"client-{i}.log",
        )  # fmt: skip
        for i in range(CLIENTS)
    ]
    parties = [coordinator, *clients]
    rng = random.Random(SEED)
    kills: list[tuple[float, str, int]] = []  # (seconds into the chaos, who, rounds committed)

    # Execute: start everything, wait for the job to get going, then kill and restart at random
    # (the first kill is a client's, the second the coordinator's, then either).
    try:
        for party in parties:
            party.start()
        deadline = time.monotonic() + 240
        while _committed(db) < 2:
            assert coordinator.proc is not None and coordinator.proc.poll() is None, (
                coordinator.tail()
            )
            assert time.monotonic() < deadline, "the job did not get going: " + coordinator.tail()
            time.sleep(0.05)
        began = time.monotonic()
        while time.monotonic() - began < CHAOS_S:
            time.sleep(rng.uniform(0.5, 2.0))
            if _committed(db) >= ROUNDS - 2:  # no kill at the end: a client restarted after
                break  # the coordinator has gone could only time out
            if len(kills) == 0:
                victim = rng.choice(clients)
            elif len(kills) == 1:
                victim = coordinator
            else:
                victim = coordinator if rng.random() < 0.3 else rng.choice(clients)
            assert victim.proc is not None
            if victim.proc.poll() is not None:  # it ended on its own: only a client, at the end
                continue
            victim.kill()
            kills.append((round(time.monotonic() - began, 1), victim.name, _committed(db)))
            victim.start()  # the same state file, identity key and certificate
        assert coordinator.proc is not None
        coordinator.proc.wait(timeout=300)
        assert coordinator.proc.returncode == 0, coordinator.tail()
        for c in clients:
            assert c.proc is not None
            c.proc.wait(timeout=120)
            assert c.proc.returncode == 0, c.tail()
    finally:
        for party in parties:
            if party.proc is not None and party.proc.poll() is None:
                party.proc.kill()
                party.proc.wait()

    # Assert: both kinds of kill happened, every round committed exactly once, and each round
    # with the fault-free run's start and contributors has the fault-free run's model.
    print("kills (s, who, rounds committed):", kills)
    who = {name for _, name, _ in kills}
    assert "coordinator" in who and who - {"coordinator"}, kills
    assert _finished(db)
    rounds = [r for (r,) in _rows(db, "SELECT round FROM metrics ORDER BY round")]
    assert rounds == list(range(1, ROUNDS + 1))
    sha = dict(_rows(db, "SELECT round, sha256 FROM checkpoints"))
    assert sorted(sha) == list(range(0, ROUNDS + 1))  # type: ignore[type-var]
    attempts = _rows(db, "SELECT round, status FROM attempts WHERE status = 'completed'")
    assert sorted(r for r, _ in attempts) == list(range(1, ROUNDS + 1))  # type: ignore[type-var]
    contributors = {
        r: sorted(json.loads(str(d))["clients"])
        for r, d in _rows(db, "SELECT round, data FROM metrics")
    }
    assert sha[0] == free_sha[0]  # the same initial model
    compared = 0
    for r in range(1, ROUNDS + 1):
        if sha[r - 1] == free_sha[r - 1] and contributors[r] == free_clients[r]:
            assert sha[r] == free_sha[r], f"round {r}: same start and cohort, another model"
            compared += 1
    assert compared == ROUNDS  # every round had the fault-free cohort: the final model is equal
    retried = _rows(db, "SELECT round, attempt, status FROM attempts WHERE status != 'completed'")
    print("attempts that did not complete:", retried)
