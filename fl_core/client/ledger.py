"""The data owner's privacy-budget ledger and hash-chained audit log, in its own SQLite file.

Rules it enforces (DESIGN.md, security rule 3; REFERENCES.md sections 3.1.5 and 6.5):

- The owner sets a cap (epsilon, delta) per data set; a data set without a cap is never charged.
- :meth:`PrivacyLedger.charge` composes the proposed release with every earlier release of that data
  set (:func:`fl_core.dp.accounting.compose`, at the cap's delta). If the total would exceed the cap
  it records the refusal and raises :class:`~fl_core.errors.BudgetExceeded`; otherwise it commits
  the entry *before returning*, so a caller that sends only after ``charge`` returns can crash at
  any instant without losing spent budget.
- Every event (cap set, charge, refusal) is appended to an audit log in which each row carries the
  SHA-256 of the previous row; :meth:`PrivacyLedger.verify` recomputes the chain and checks that the
  entries and caps agree with it. A ledger that fails the check refuses every charge (fails
  closed). Cutting rows off the end of the chain leaves a valid shorter chain: anchor
  :meth:`PrivacyLedger.head` outside the file (e.g. in the job's result) to detect that too.

Durability: WAL journal, ``synchronous=FULL``, and ``BEGIN IMMEDIATE`` around every
read-check-write, so two processes sharing one ledger cannot both spend the last of a budget.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from fl_core.dp.accounting import PrivacyEvent, compose, event_from_dict, event_to_dict
from fl_core.errors import BudgetExceeded, ConfigError, LedgerTampered

from ._record_ids import Withdrawal, record_digests

SCHEMA_VERSION: Final = 1
GENESIS: Final = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS caps (
    dataset TEXT PRIMARY KEY, epsilon REAL NOT NULL, delta REAL NOT NULL, audit_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY, job TEXT NOT NULL, round INTEGER NOT NULL, dataset TEXT NOT NULL,
    mechanism TEXT NOT NULL, parameters TEXT NOT NULL, epsilon_spent REAL NOT NULL,
    epsilon_total REAL NOT NULL, delta REAL NOT NULL, created_at TEXT NOT NULL,
    audit_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Cap:
    """The owner's limit for one data set."""

    dataset: str
    epsilon: float
    delta: float


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One release charged to a data set."""

    id: int
    job: str
    round: int
    dataset: str
    mechanism: str
    parameters: dict[str, Any] = field(compare=False)
    epsilon_spent: float
    epsilon_total: float
    delta: float
    created_at: str


@dataclass(frozen=True, slots=True)
class DatasetBudget:
    """Cap, spend and entries of one data set (what ``bulwark budget show`` prints)."""

    dataset: str
    cap: Cap | None
    spent: float
    entries: tuple[LedgerEntry, ...]

    @property
    def remaining(self) -> float:
        """Epsilon left under the cap (0 without a cap)."""
        return 0.0 if self.cap is None else max(0.0, self.cap.epsilon - self.spent)


@dataclass(frozen=True, slots=True)
class LedgerView:
    """Everything :func:`render_budget` prints."""

    path: str
    datasets: tuple[DatasetBudget, ...]
    audit_rows: int
    head_hash: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _row_hash(row_id: int, created_at: str, kind: str, payload: str, prev_hash: str) -> str:
    body = _canonical(
        {
            "id": row_id,
            "created_at": created_at,
            "kind": kind,
            "payload": payload,
            "prev": prev_hash,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _check_name(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ConfigError(f"{name} must be a non-empty string of at most 256 characters")
    return value


class PrivacyLedger:
    """A data owner's privacy ledger in the SQLite file at ``path`` (created if missing).

    Raises:
        ConfigError: if the file holds a ledger of another schema version.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        created = not os.path.exists(self._path)
        self._db = sqlite3.connect(self._path, isolation_level=None, timeout=30.0)
        if created:
            os.chmod(self._path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        with self._transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES('schema', ?)", (str(SCHEMA_VERSION),)
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise ConfigError(
                    f"ledger schema version {row[0]}, this code reads {SCHEMA_VERSION}"
                )

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions and the audit chain ---------------------------------------------------

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self._db = db

        def __enter__(self) -> None:
            self._db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: object, *rest: object) -> None:
            self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")

    def _transaction(self) -> PrivacyLedger._Tx:
        return PrivacyLedger._Tx(self._db)

    def _append_audit(self, kind: str, payload: dict[str, Any]) -> int:
        last = self._db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        row_id, prev = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
        created, body = _now(), _canonical(payload)
        digest = _row_hash(row_id, created, kind, body, prev)
        self._db.execute(
            "INSERT INTO audit(id, created_at, kind, payload, prev_hash, hash) VALUES(?,?,?,?,?,?)",
            (row_id, created, kind, body, prev, digest),
        )
        return row_id

    def _verify_locked(self) -> int:
        prev, expected_id = GENESIS, 1
        charges: dict[int, dict[str, Any]] = {}
        caps: dict[str, tuple[int, dict[str, Any]]] = {}
        rows = self._db.execute(
            "SELECT id, created_at, kind, payload, prev_hash, hash FROM audit ORDER BY id"
        ).fetchall()
        for row_id, created, kind, body, prev_hash, digest in rows:
            if row_id != expected_id:
                raise LedgerTampered(f"audit row {expected_id} is missing (found {row_id})")
            if prev_hash != prev or _row_hash(row_id, created, kind, body, prev) != digest:
                raise LedgerTampered(f"audit row {row_id} does not match its hash chain")
            payload = json.loads(body)
            if kind == "charge":
                charges[row_id] = payload
            elif kind == "cap":
                caps[payload["dataset"]] = (row_id, payload)
            prev, expected_id = digest, expected_id + 1
        entries = self._db.execute(
            "SELECT id, job, round, dataset, mechanism, parameters, epsilon_spent, epsilon_total,"
            " delta, created_at, audit_id FROM entries ORDER BY id"
        ).fetchall()
        if len(entries) != len(charges):
            raise LedgerTampered(
                f"{len(entries)} entries but {len(charges)} charges in the audit log"
            )
        for eid, job, rnd, ds, mech, params, spent, total, delta, created, audit_id in entries:
            logged = charges.get(audit_id)
            actual = {
                "entry_id": eid, "job": job, "round": rnd, "dataset": ds, "mechanism": mech,
                "parameters": json.loads(params), "epsilon_spent": spent,
                "epsilon_total": total, "delta": delta, "created_at": created,
            }  # fmt: skip
            if logged != actual:
                raise LedgerTampered(f"entry {eid} differs from its audit row {audit_id}")
        cap_rows = self._db.execute("SELECT dataset, epsilon, delta, audit_id FROM caps").fetchall()
        if len(cap_rows) != len(caps):
            raise LedgerTampered(f"{len(cap_rows)} caps but {len(caps)} data sets in the audit log")
        for ds, eps, delta, audit_id in cap_rows:
            if caps.get(ds) != (audit_id, {"dataset": ds, "epsilon": eps, "delta": delta}):
                raise LedgerTampered(f"cap of data set {ds!r} differs from the audit log")
        return len(rows)

    def _audit_rows(self, kind: str) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._db.execute(
            "SELECT id, created_at, payload FROM audit WHERE kind=? ORDER BY id", (kind,)
        ).fetchall()
        return [(int(r[0]), str(r[1]), json.loads(r[2])) for r in rows]

    def verify(self) -> int:
        """Check the audit chain, and that entries and caps match it.

        Returns:
            The number of audit rows verified.

        Raises:
            LedgerTampered: naming the first inconsistency found.
        """
        with self._transaction():
            return self._verify_locked()

    def head(self) -> tuple[int, str]:
        """``(number of audit rows, hash of the last row)``: anchor this outside the file."""
        last = self._db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        return (0, GENESIS) if last is None else (int(last[0]), str(last[1]))

    # --- caps, events, charges --------------------------------------------------------------

    def set_cap(self, dataset: str, *, epsilon: float, delta: float) -> Cap:
        """Set (or change) the cap of ``dataset``; logged in the audit chain."""
        _check_name(dataset, "dataset")
        if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon >= 0):
            raise ConfigError(f"cap epsilon must be a finite number >= 0, got {epsilon!r}")
        if not (isinstance(delta, int | float) and 0 < delta < 1):
            raise ConfigError(f"cap delta must be a number in (0, 1), got {delta!r}")
        cap = Cap(dataset=dataset, epsilon=float(epsilon), delta=float(delta))
        with self._transaction():
            self._verify_locked()
            audit_id = self._append_audit(
                "cap", {"dataset": dataset, "epsilon": cap.epsilon, "delta": cap.delta}
            )
            self._db.execute(
                "INSERT INTO caps(dataset, epsilon, delta, audit_id) VALUES(?,?,?,?) "
                "ON CONFLICT(dataset) DO UPDATE SET epsilon=excluded.epsilon, "
                "delta=excluded.delta, audit_id=excluded.audit_id",
                (dataset, cap.epsilon, cap.delta, audit_id),
            )
        return cap

    def cap(self, dataset: str) -> Cap | None:
        """The cap of ``dataset``, or ``None`` if the owner has not set one."""
        row = self._db.execute(
            "SELECT epsilon, delta FROM caps WHERE dataset=?", (dataset,)
        ).fetchone()
        return None if row is None else Cap(dataset=dataset, epsilon=row[0], delta=row[1])

    def events(self, dataset: str) -> list[PrivacyEvent]:
        """Every release charged to ``dataset``, as accounting events."""
        rows = self._db.execute(
            "SELECT parameters FROM entries WHERE dataset=? ORDER BY id", (dataset,)
        ).fetchall()
        return [event_from_dict(json.loads(r[0])) for r in rows]

    def spent(self, dataset: str) -> float:
        """Total epsilon spent on ``dataset`` at its cap's delta (0 without cap or entries)."""
        cap = self.cap(dataset)
        events = self.events(dataset)
        if cap is None or not events:
            return 0.0
        return compose(events, delta=cap.delta).epsilon

    def preview(self, *, dataset: str, event: PrivacyEvent) -> float:
        """The total epsilon ``dataset`` would have spent after ``event`` (nothing is written).

        Raises:
            BudgetExceeded: if ``dataset`` has no cap.
        """
        cap = self.cap(dataset)
        if cap is None:
            raise BudgetExceeded(f"no privacy cap is set for data set {dataset!r}")
        return compose([*self.events(dataset), event], delta=cap.delta).epsilon

    def charge(
        self, *, job: str, round: int, dataset: str, mechanism: str, event: PrivacyEvent
    ) -> LedgerEntry:
        """Charge one release to ``dataset``, or refuse it; durable before this returns.

        Args:
            job: the job id.
            round: the round number.
            dataset: the data set the release is computed from.
            mechanism: a short label (``"dpsgd"``, ``"dp-fedavg-central"``, ``"dp-fedavg-skellam"``,
                ``"dp-fedsgd"``, ...).
            event: the privacy event of the release (its parameters are stored as JSON).

        Returns:
            The committed :class:`LedgerEntry`.

        Raises:
            BudgetExceeded: if ``dataset`` has no cap or the total would exceed it (the refusal is
                recorded in the audit log).
            LedgerTampered: if the ledger fails verification (nothing is charged).
        """
        _check_name(job, "job")
        _check_name(dataset, "dataset")
        _check_name(mechanism, "mechanism")
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise ConfigError(f"round must be an integer >= 0, got {round!r}")
        params = event_to_dict(event)
        with self._transaction():
            self._verify_locked()
            cap = self.cap(dataset)
            before = self.events(dataset)
            refusal = f"no privacy cap is set for data set {dataset!r}"
            if cap is not None:
                spent_before = compose(before, delta=cap.delta).epsilon if before else 0.0
                total = compose([*before, event], delta=cap.delta).epsilon
                refusal = (
                    f"job {job!r} round {round} ({mechanism}) would bring data set {dataset!r} to "
                    f"epsilon {total:.4g} at delta {cap.delta:g}, above the cap {cap.epsilon:g} "
                    f"(spent so far {spent_before:.4g})"
                )
            if cap is None or not total <= cap.epsilon:
                self._append_audit(
                    "refusal",
                    {"job": job, "round": round, "dataset": dataset, "mechanism": mechanism,
                     "parameters": params, "reason": refusal},
                )  # fmt: skip
                entry = None
            else:
                entry = self._insert_entry(
                    LedgerEntry(
                        id=1 + (self._db.execute("SELECT MAX(id) FROM entries").fetchone()[0] or 0),
                        job=job,
                        round=round,
                        dataset=dataset,
                        mechanism=mechanism,
                        parameters=params,
                        epsilon_spent=max(0.0, total - spent_before),
                        epsilon_total=total,
                        delta=cap.delta,
                        created_at=_now(),
                    )  # fmt: skip
                )
        if entry is None:
            raise BudgetExceeded(refusal)
        return entry

    def _insert_entry(self, entry: LedgerEntry) -> LedgerEntry:
        payload = {
            "entry_id": entry.id, "job": entry.job, "round": entry.round,
            "dataset": entry.dataset, "mechanism": entry.mechanism,
            "parameters": entry.parameters, "epsilon_spent": entry.epsilon_spent,
            "epsilon_total": entry.epsilon_total, "delta": entry.delta,
            "created_at": entry.created_at,
        }  # fmt: skip
        audit_id = self._append_audit("charge", payload)
        self._db.execute(
            "INSERT INTO entries(id, job, round, dataset, mechanism, parameters, epsilon_spent,"
            " epsilon_total, delta, created_at, audit_id) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (entry.id, entry.job, entry.round, entry.dataset, entry.mechanism,
             _canonical(entry.parameters), entry.epsilon_spent, entry.epsilon_total, entry.delta,
             entry.created_at, audit_id),
        )  # fmt: skip
        return entry

    # --- record ids: withdrawals and uses (consent and erasure) ------------------------------

    def _record_key_locked(self) -> bytes:
        rows = self._audit_rows("record_key")
        if rows:
            return bytes.fromhex(rows[0][2]["key"])
        key = secrets.token_bytes(32)
        self._append_audit("record_key", {"key": key.hex()})
        return key

    def record_key(self) -> bytes:
        """The ledger's key for record-id digests (created in its chain on first use).

        A withdrawal is kept as HMAC-SHA256 digests of the ids under this random key, never as
        the ids themselves (:func:`record_digests`): the ledger names no person, and only
        whoever holds the ledger (the owner) can match a digest to a record.
        """
        with self._transaction():
            self._verify_locked()
            return self._record_key_locked()

    def withdraw(self, dataset: str, ids: Sequence[str]) -> Withdrawal:
        """Mark records ``ids`` of ``dataset`` as withdrawn; every later task excludes them.

        The withdrawal (the ids' keyed digests, how many, when) is appended to the audit
        chain with the rounds that read ``dataset`` before it (:meth:`record_use`): what was
        released while the records were in.

        Raises:
            ConfigError: no ids, or an id that is empty or longer than 256 characters.
            LedgerTampered: the ledger fails verification (nothing is written).
        """
        _check_name(dataset, "dataset")
        if not ids:
            raise ConfigError("a withdrawal needs at least one record id")
        for i in ids:
            _check_name(i, "a record id")
        digests = sorted(set(record_digests(self.record_key(), dataset, ids)))
        with self._transaction():
            self._verify_locked()
            before = self._withdrawn_locked(dataset)
            new = [d for d in digests if d not in before]
            used = [
                {"job": p["job"], "round": p["round"], "at": at}
                for _, at, p in self._audit_rows("use")
                if p["dataset"] == dataset
            ]
            created = _now()
            audit_id = self._append_audit(
                "withdrawal",
                {"dataset": dataset, "requested": len(ids), "new": len(new), "digests": new,
                 "rounds_used": used, "created_at": created},
            )  # fmt: skip
        return Withdrawal(
            id=audit_id,
            dataset=dataset,
            requested=len(ids),
            new=len(new),
            rounds_used=tuple((u["job"], int(u["round"])) for u in used),
            created_at=created,
        )

    def _withdrawn_locked(self, dataset: str) -> set[str]:
        return {
            d for _, _, p in self._audit_rows("withdrawal") if p["dataset"] == dataset
            for d in p["digests"]
        }  # fmt: skip

    def withdrawn(self, dataset: str) -> frozenset[str]:
        """The keyed digests of every withdrawn record of ``dataset`` (verified chain).

        Raises:
            LedgerTampered: the ledger fails verification (an owner then reads no data).
        """
        with self._transaction():
            self._verify_locked()
            return frozenset(self._withdrawn_locked(dataset))

    def withdrawals(self, dataset: str | None = None) -> list[Withdrawal]:
        """Every withdrawal, or those of one data set, oldest first."""
        return [
            Withdrawal(
                id=row_id,
                dataset=p["dataset"],
                requested=int(p["requested"]),
                new=int(p["new"]),
                rounds_used=tuple((u["job"], int(u["round"])) for u in p["rounds_used"]),
                created_at=p["created_at"],
            )
            for row_id, _, p in self._audit_rows("withdrawal")
            if dataset is None or p["dataset"] == dataset
        ]

    def datasets(self) -> list[str]:
        """Every data set the ledger knows: with a cap, a charge, a use or a withdrawal."""
        names = {r[0] for r in self._db.execute("SELECT dataset FROM caps").fetchall()}
        names |= {r[0] for r in self._db.execute("SELECT dataset FROM entries").fetchall()}
        for kind in ("use", "withdrawal"):
            names |= {p["dataset"] for _, _, p in self._audit_rows(kind)}
        return sorted(names)

    def uses(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Every recorded use (job, round, dataset, rows, at), oldest first."""
        return [
            {**p, "at": at}
            for _, at, p in self._audit_rows("use")
            if dataset is None or p["dataset"] == dataset
        ]

    def record_use(self, *, job: str, round: int, dataset: str, rows: int) -> None:
        """Record that a task of ``job`` round ``round`` read ``rows`` records of ``dataset``.

        Written before the result is sent, once per round; a later withdrawal names these
        rounds (:meth:`withdraw`).
        """
        _check_name(job, "job")
        _check_name(dataset, "dataset")
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise ConfigError(f"round must be an integer >= 0, got {round!r}")
        with self._transaction():
            self._verify_locked()
            self._append_audit(
                "use", {"job": job, "round": round, "dataset": dataset, "rows": int(rows)}
            )

    # --- reading ----------------------------------------------------------------------------

    def entries(self, dataset: str | None = None) -> list[LedgerEntry]:
        """All entries, or those of one data set, oldest first."""
        sql = (
            "SELECT id, job, round, dataset, mechanism, parameters, epsilon_spent, epsilon_total,"
            " delta, created_at FROM entries"
        )
        args: tuple[str, ...] = ()
        if dataset is not None:
            sql, args = sql + " WHERE dataset=?", (dataset,)
        rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [
            LedgerEntry(
                id=r[0],
                job=r[1],
                round=r[2],
                dataset=r[3],
                mechanism=r[4],
                parameters=json.loads(r[5]),
                epsilon_spent=r[6],
                epsilon_total=r[7],
                delta=r[8],
                created_at=r[9],
            )  # fmt: skip
            for r in rows
        ]

    def show(self) -> LedgerView:
        """The data that ``bulwark budget show`` renders with :func:`render_budget`."""
        names = sorted(
            {r[0] for r in self._db.execute("SELECT dataset FROM caps").fetchall()}
            | {r[0] for r in self._db.execute("SELECT dataset FROM entries").fetchall()}
        )
        budgets = []
        for name in names:
            entries = tuple(self.entries(name))
            spent = self.spent(name) if self.cap(name) else entries[-1].epsilon_total
            budgets.append(
                DatasetBudget(dataset=name, cap=self.cap(name), spent=spent, entries=entries)
            )
        count, digest = self.head()
        return LedgerView(
            path=self._path, datasets=tuple(budgets), audit_rows=count, head_hash=digest
        )


def render_budget(view: LedgerView) -> str:
    """Render a :class:`LedgerView` as the plain-text table ``bulwark budget show`` prints."""
    lines = [
        f"privacy ledger {view.path}  (audit rows: {view.audit_rows}, head {view.head_hash[:16]})"
    ]
    if not view.datasets:
        return "\n".join([*lines, "no data sets"])
    header = f"{'data set':<24} {'cap eps':>9} {'delta':>9} {'spent eps':>10} {'remaining':>10}"
    lines += ["", header, "-" * len(header)]
    for b in view.datasets:
        cap_eps = f"{b.cap.epsilon:9.4g}" if b.cap else f"{'none':>9}"
        cap_delta = f"{b.cap.delta:9.2g}" if b.cap else f"{'-':>9}"
        lines.append(f"{b.dataset:<24} {cap_eps} {cap_delta} {b.spent:10.4f} {b.remaining:10.4f}")
    for b in view.datasets:
        if not b.entries:
            continue
        lines += ["", f"releases of {b.dataset}:"]
        sub = (
            f"  {'#':>4} {'time (UTC)':<26} {'job':<16} {'round':>5} {'mechanism':<20} "
            f"{'eps':>8} {'total':>8}"
        )
        lines += [sub, "  " + "-" * (len(sub) - 2)]
        for e in b.entries:
            lines.append(
                f"  {e.id:>4} {e.created_at[:26]:<26} {e.job[:16]:<16} {e.round:>5} "
                f"{e.mechanism[:20]:<20} {e.epsilon_spent:8.4f} {e.epsilon_total:8.4f}"
            )
    return "\n".join(lines)
