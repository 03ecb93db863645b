"""The coordinator's state in SQLite: jobs, round attempts, stages, metrics, checkpoints, events.

Every change is one transaction, and a round becomes *completed* in the same transaction that
stores its checkpoint (safetensors bytes of the new global model and of the strategy's state) and
its metrics. A coordinator killed at any instant (kill -9 included) therefore restarts from the
last completed round; the interrupted attempt is marked ``interrupted`` and the round runs again as
a new attempt (with fresh keys, as secure aggregation requires). The database runs in WAL mode
with ``synchronous=FULL``, so a commit survives a crash of the process and of the machine.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ..config import describe_differences
from ..errors import ConfigError, StoreError

SCHEMA_VERSION = 1
PAGE_SIZE = 1 << 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, config TEXT NOT NULL, config_sha256 TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', created REAL NOT NULL, finished REAL
);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL,
    status TEXT NOT NULL, stage TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',
    cohort TEXT NOT NULL DEFAULT '[]', started REAL NOT NULL, finished REAL,
    PRIMARY KEY (job_id, round, attempt)
);
CREATE TABLE IF NOT EXISTS stages (
    job_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL, stage TEXT NOT NULL,
    sent INTEGER NOT NULL, answered INTEGER NOT NULL, dropped TEXT NOT NULL,
    seconds REAL NOT NULL, finished REAL NOT NULL,
    PRIMARY KEY (job_id, round, attempt, stage)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL, round INTEGER NOT NULL, weights BLOB NOT NULL, sha256 TEXT NOT NULL,
    strategy_state BLOB NOT NULL, PRIMARY KEY (job_id, round)
);
CREATE TABLE IF NOT EXISTS metrics (
    job_id TEXT NOT NULL, round INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (job_id, round)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, time REAL NOT NULL,
    round INTEGER, client TEXT, kind TEXT NOT NULL, detail TEXT NOT NULL
);
"""

Arrays = dict[str, npt.NDArray[np.float32 | np.float64]]


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a job stands: the last completed round and its checkpoint."""

    completed_round: int
    weights: npt.NDArray[np.float32]
    strategy_state: Arrays
    status: str


def _pack(arrays: Arrays) -> bytes:
    return st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()}) if arrays else b""


def _unpack(blob: bytes) -> Arrays:
    return dict(st_load(blob)) if blob else {}


class Store:
    """SQLite-backed coordinator state. One instance per coordinator process."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # Large pages for a new database (a no-op on an existing one): a round's checkpoint
            # is megabytes, and 64 KiB pages commit it about twice as fast as 4 KiB pages, while a
            # small bookkeeping commit costs about 0.05 ms more.
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open coordinator state {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction.

        ``durable`` transactions are fsynced before they return (``synchronous=FULL``); the
        others (bookkeeping: attempt started, stage done, events) survive a crash of the process
        (kill -9) but could be lost with the machine's power until the next durable commit, which
        fsyncs them too. A lost bookkeeping row only means a round restarts as if it had not
        begun; nothing a round commits is in them.
        """
        try:
            self._db.execute("PRAGMA synchronous=" + ("FULL" if durable else "NORMAL"))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"coordinator state {self.path}: {exc}") from exc

    # --- jobs --------------------------------------------------------------------------------

    def open_job(
        self, job_id: str, *, config: str, initial_weights: npt.NDArray[np.float32]
    ) -> ResumePoint:
        """Create the job, or find it again after a restart; return where it stands.

        Attempts left ``running`` by a crash are marked ``interrupted``.

        Raises:
            ConfigError: the database holds a job of this id with a different configuration.
        """
        sha = hashlib.sha256(config.encode()).hexdigest()
        with self._tx() as db:
            row = db.execute(
                "SELECT config_sha256, status, config FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO jobs (job_id, config, config_sha256, status, created)"
                    " VALUES (?, ?, ?, 'running', ?)",
                    (job_id, config, sha, time.time()),
                )
                self._put_checkpoint(db, job_id, 0, initial_weights, {})
            elif row[0] != sha:
                raise ConfigError(
                    f"the state file {self.path} holds job {job_id!r} with a different job file "
                    f"(sha256 {row[0][:12]}..., this file {sha[:12]}...): "
                    f"{describe_differences(row[2], config)}; use another state file (or "
                    "output folder), or the job file it was started with"
                )
            db.execute(
                "UPDATE attempts SET status = 'interrupted', finished = ?,"
                " reason = 'the coordinator stopped during this attempt'"
                " WHERE job_id = ? AND status = 'running'",
                (time.time(), job_id),
            )
        return self.resume_point(job_id)

    def resume_point(self, job_id: str) -> ResumePoint:
        """The last completed round of ``job_id`` with its checkpoint."""
        row = self._db.execute(
            "SELECT round, weights, sha256, strategy_state FROM checkpoints"
            " WHERE job_id = ? ORDER BY round DESC LIMIT 1",
            (job_id,),
        ).fetchone()
        status = self._db.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None or status is None:
            raise StoreError(f"job {job_id!r} has no checkpoint in {self.path}")
        rnd, blob, sha, state = row
        if hashlib.sha256(blob).hexdigest() != sha:
            raise StoreError(f"checkpoint of round {rnd} in {self.path} fails its checksum")
        weights = _unpack(blob)["weights"].astype(np.float32)
        return ResumePoint(int(rnd), weights, _unpack(state), str(status[0]))

    def finish_job(self, job_id: str, *, status: str, reason: str = "") -> None:
        """Mark the job ``completed`` or ``failed``."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status = ?, reason = ?, finished = ? WHERE job_id = ?",
                (status, reason, time.time(), job_id),
            )

    # --- rounds ------------------------------------------------------------------------------

    def next_attempt(self, job_id: str, round: int) -> int:
        """1 + the number of attempts this round has had."""
        row = self._db.execute(
            "SELECT COALESCE(MAX(attempt), 0) FROM attempts WHERE job_id = ? AND round = ?",
            (job_id, round),
        ).fetchone()
        return int(row[0]) + 1

    def start_attempt(self, job_id: str, round: int, attempt: int, cohort: list[str]) -> None:
        """Record that an attempt started with this cohort."""
        with self._tx(durable=False) as db:
            db.execute(
                "INSERT INTO attempts (job_id, round, attempt, status, cohort, started)"
                " VALUES (?, ?, ?, 'running', ?, ?)",
                (job_id, round, attempt, json.dumps(cohort), time.time()),
            )

    def stage_done(
        self,
        job_id: str,
        round: int,
        attempt: int,
        stage: str,
        *,
        sent: int,
        answered: int,
        dropped: list[str],
        seconds: float,
    ) -> None:
        """Record a completed stage (a restarted coordinator knows where the round stood)."""
        with self._tx(durable=False) as db:
            db.execute(
                "INSERT OR REPLACE INTO stages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    round,
                    attempt,
                    stage,
                    sent,
                    answered,
                    json.dumps(dropped),
                    seconds,
                    time.time(),
                ),
            )
            db.execute(
                "UPDATE attempts SET stage = ? WHERE job_id = ? AND round = ? AND attempt = ?",
                (stage, job_id, round, attempt),
            )

    def abort_attempt(
        self, job_id: str, round: int, attempt: int, *, stage: str, reason: str
    ) -> None:
        """Record that an attempt aborted, and why."""
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET status = 'aborted', stage = ?, reason = ?, finished = ?"
                " WHERE job_id = ? AND round = ? AND attempt = ?",
                (stage, reason, time.time(), job_id, round, attempt),
            )

    def commit_round(
        self,
        job_id: str,
        round: int,
        attempt: int,
        *,
        weights: npt.NDArray[np.float32],
        strategy_state: Arrays,
        metrics: dict[str, object],
    ) -> None:
        """Complete a round: its attempt, checkpoint and metrics, in one transaction."""
        with self._tx() as db:
            done = db.execute(
                "SELECT 1 FROM checkpoints WHERE job_id = ? AND round = ?", (job_id, round)
            ).fetchone()
            if done is not None:
                raise StoreError(f"round {round} of job {job_id!r} is already completed")
            self._put_checkpoint(db, job_id, round, weights, strategy_state)
            db.execute("INSERT INTO metrics VALUES (?, ?, ?)", (job_id, round, json.dumps(metrics)))
            db.execute(
                "UPDATE attempts SET status = 'completed', finished = ?"
                " WHERE job_id = ? AND round = ? AND attempt = ?",
                (time.time(), job_id, round, attempt),
            )

    @staticmethod
    def _put_checkpoint(
        db: sqlite3.Connection,
        job_id: str,
        round: int,
        weights: npt.NDArray[np.float32],
        strategy_state: Arrays,
    ) -> None:
        blob = _pack({"weights": np.asarray(weights, dtype=np.float32)})
        db.execute(
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)",
            (job_id, round, blob, hashlib.sha256(blob).hexdigest(), _pack(strategy_state)),
        )

    # --- reading -----------------------------------------------------------------------------

    def metrics(self, job_id: str) -> list[dict[str, object]]:
        """Per-round metrics of completed rounds, in round order."""
        rows = self._db.execute(
            "SELECT data FROM metrics WHERE job_id = ? ORDER BY round", (job_id,)
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def attempts(self, job_id: str) -> list[dict[str, object]]:
        """Every round attempt with its status and reason."""
        rows = self._db.execute(
            "SELECT round, attempt, status, stage, reason FROM attempts WHERE job_id = ?"
            " ORDER BY round, attempt",
            (job_id,),
        ).fetchall()
        keys = ("round", "attempt", "status", "stage", "reason")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def checkpoint(self, job_id: str, round: int) -> npt.NDArray[np.float32]:
        """The global model after ``round`` (0: the initial model)."""
        row = self._db.execute(
            "SELECT weights FROM checkpoints WHERE job_id = ? AND round = ?", (job_id, round)
        ).fetchone()
        if row is None:
            raise StoreError(f"no checkpoint of round {round} of job {job_id!r}")
        return _unpack(row[0])["weights"].astype(np.float32)

    def job_status(self, job_id: str) -> tuple[str, str]:
        """The job's status and reason."""
        row = self._db.execute(
            "SELECT status, reason FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no job {job_id!r} in {self.path}")
        return str(row[0]), str(row[1])

    # --- events ------------------------------------------------------------------------------

    def log_event(
        self,
        job_id: str,
        *,
        kind: str,
        detail: str,
        round: int | None = None,
        client: str | None = None,
    ) -> None:
        """Append an event (a rejected result, a refusal, an abort) to the job's log."""
        with self._tx(durable=False) as db:
            db.execute(
                "INSERT INTO events (job_id, time, round, client, kind, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, time.time(), round, client, kind, detail[:4096]),
            )

    def events(self, job_id: str, kind: str | None = None) -> list[dict[str, object]]:
        """The job's events, oldest first."""
        query = "SELECT round, client, kind, detail FROM events WHERE job_id = ?"
        args: tuple[object, ...] = (job_id,)
        if kind is not None:
            query += " AND kind = ?"
            args += (kind,)
        rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        keys = ("round", "client", "kind", "detail")
        return [dict(zip(keys, r, strict=True)) for r in rows]
