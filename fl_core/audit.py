"""Every party's audit trail: an append-only, hash-chained log of what it sent and received.

The coordinator, each data owner and the HE key holder keep one :class:`AuditLog` each, in an
SQLite file of their own state folder. An entry says what happened (``kind``), in which direction
(sent, received, refused, local), to or from whom (``peer``, a roster or client name), under which
job and manifest (the SHA-256 of the job file every party pinned), with which protections in
force, and the epsilon spent when a release spent privacy budget. It never holds raw records,
keys or individual updates: :meth:`AuditLog.append` accepts only short strings, numbers and
booleans (and lists of them) as details, so neither a tensor nor key bytes can be written.

Chain. Entry ``n`` stores its canonical JSON body (which contains ``n`` itself) and
``hash_n = SHA-256(DOMAIN || hash_{n-1} || 0x00 || body_n)``, with ``hash_0`` all zeros.
:func:`verify_audit` walks the chain and names the first entry that is not what the chain says:

- an **edited** entry no longer matches its hash;
- a **deleted** entry leaves a gap in the numbers, or (when later entries were renumbered) breaks
  the next entry's link to its predecessor;
- an **inserted** entry either duplicates a number or breaks the links after it;
- **reordered** entries carry bodies whose numbers and links do not fit their places.

Notes:
    A hash chain is tamper-evident, not tamper-proof: someone who rewrites an entry *and
    recomputes every later hash* produces a valid chain, and cutting entries off the end leaves a
    valid shorter one. That is why :meth:`AuditLog.head` (entry count and last hash) is anchored
    outside the file: the run's report records every party's head, and a privacy officer who
    keeps the report detects a later rewrite. (Crosby and Wallach, "Efficient Data Structures for
    Tamper-Evident Logging", USENIX Security 2009, section 3: hash chains and the need to commit
    to the head.)

Durability: WAL journal, ``synchronous=FULL``, one ``BEGIN IMMEDIATE`` transaction per append,
so two processes (or threads) appending to one log cannot fork the chain, and kill -9 loses
nothing that :meth:`AuditLog.append` returned.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from .errors import AuditTampered, ConfigError

SCHEMA_VERSION: Final = 1
GENESIS: Final = "0" * 64
DOMAIN: Final = b"bulwark-audit-v1\x00"

DIRECTIONS: Final = ("sent", "received", "refused", "local")
"""``sent``/``received``: a message to or from ``peer``; ``refused``: this party refused
something (the reason is in the entry); ``local``: a decision or event at this party only."""

MAX_TEXT: Final = 2000
"""The longest string an entry may carry (a reason, a name): room for words, not for data."""

MAX_LIST: Final = 1000
"""The longest list an entry may carry (e.g. the names of a round's contributors)."""

Scalar = str | int | float | bool | None
Detail = Scalar | list[Scalar]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One entry of an audit log.

    Attributes:
        seq: its position, from 1.
        created_at: UTC time (ISO 8601, microseconds).
        party: who keeps the log (the party's name).
        role: ``owner``, ``coordinator`` or ``keyholder``.
        kind: what happened (``job_accepted``, ``release``, ``refusal``, ``round_committed``...).
        direction: one of :data:`DIRECTIONS`.
        peer: the other party, when there is one.
        job: the job's name.
        manifest: SHA-256 (hex) of the job file the party pinned.
        round: the round (0: not about a round).
        stage: the stage of the task, when it is about one.
        protections: the protections in force (see :func:`job_protections`).
        epsilon: the epsilon this entry's release brought the job to, when it spent any.
        reason: why (for refusals and aborts).
        detail: further facts, short scalars only.
        prev_hash: the previous entry's hash.
        hash: this entry's hash.
    """

    seq: int
    created_at: str
    party: str
    role: str
    kind: str
    direction: str
    peer: str = ""
    job: str = ""
    manifest: str = ""
    round: int = 0
    stage: str = ""
    protections: tuple[str, ...] = ()
    epsilon: float | None = None
    reason: str = ""
    detail: dict[str, Detail] = field(default_factory=dict)
    prev_hash: str = GENESIS
    hash: str = ""

    def body(self) -> dict[str, object]:
        """The hashed content (everything but the two hashes)."""
        return {
            "seq": self.seq, "created_at": self.created_at, "party": self.party,
            "role": self.role, "kind": self.kind, "direction": self.direction,
            "peer": self.peer, "job": self.job, "manifest": self.manifest, "round": self.round,
            "stage": self.stage, "protections": list(self.protections), "epsilon": self.epsilon,
            "reason": self.reason, "detail": self.detail,
        }  # fmt: skip

    def to_dict(self) -> dict[str, object]:
        """The entry as one JSON object (what ``bulwark audit export`` writes per line)."""
        return {**self.body(), "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True, slots=True)
class AuditHead:
    """How many entries a log has, and the hash of the last: anchor it outside the file."""

    entries: int
    hash: str


def canonical(obj: object) -> str:
    """Deterministic JSON (sorted keys, no whitespace, no NaN)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def entry_hash(prev_hash: str, body: str) -> str:
    """The chain's hash of an entry whose canonical body is ``body``."""
    return hashlib.sha256(DOMAIN + prev_hash.encode() + b"\x00" + body.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ConfigError(f"audit entry: {name} must be a string of at most {MAX_TEXT} characters")
    return value


def _scalar(value: object, name: str) -> Scalar:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"audit entry: detail {name!r} is not a finite number")
        return value
    if isinstance(value, str):
        return _text(value, f"detail {name!r}")
    raise ConfigError(
        f"audit entry: detail {name!r} is a {type(value).__name__}; only short strings, numbers "
        "and booleans are recorded (never data, keys or updates)"
    )


def _details(detail: Mapping[str, object]) -> dict[str, Detail]:
    out: dict[str, Detail] = {}
    for key, value in detail.items():
        _text(key, "a detail's name")
        if isinstance(value, list | tuple):
            if len(value) > MAX_LIST:
                raise ConfigError(f"audit entry: detail {key!r} has more than {MAX_LIST} items")
            out[key] = [_scalar(v, key) for v in value]
        else:
            out[key] = _scalar(value, key)
    return out


class AuditLog:
    """A party's audit log in the SQLite file at ``path`` (created, mode 0600, if missing).

    Safe to share between threads (one connection behind a lock) and between processes (each
    append is one immediate transaction).

    Args:
        path: the log file.
        party: the name of the party that keeps it.
        role: its role (``owner``, ``coordinator``, ``keyholder``).

    Raises:
        ConfigError: the file is not an audit log of this schema, or belongs to another party.
    """

    def __init__(self, path: str | os.PathLike[str], *, party: str, role: str) -> None:
        self.path = Path(path)
        self.party = _text(party, "party")
        self.role = _text(role, "role")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=30.0, check_same_thread=False
            )
            if created:
                os.chmod(self.path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                self._db.executemany(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES(?, ?)",
                    [("schema", str(SCHEMA_VERSION)), ("party", party), ("role", role)],
                )
                meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path} is not an audit log: {exc}") from None
        if meta.get("schema") != str(SCHEMA_VERSION):
            raise ConfigError(
                f"{self.path}: audit log schema {meta.get('schema')}, this code reads "
                f"{SCHEMA_VERSION}"
            )
        if (meta.get("party"), meta.get("role")) != (party, role):
            raise ConfigError(
                f"{self.path} is the audit log of {meta.get('role')} {meta.get('party')!r}, "
                f"not of {role} {party!r}"
            )
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(
        self,
        kind: str,
        *,
        direction: str,
        peer: str = "",
        job: str = "",
        manifest: str = "",
        round: int = 0,
        stage: str = "",
        protections: Sequence[str] = (),
        epsilon: float | None = None,
        reason: str = "",
        detail: Mapping[str, object] | None = None,
    ) -> AuditEntry:
        """Append one entry; it is durable when this returns.

        Raises:
            ConfigError: a field of the wrong type or size, or a detail that is not a short
                scalar (which is how raw data, keys and updates are kept out).
        """
        if direction not in DIRECTIONS:
            raise ConfigError(f"audit entry: direction {direction!r}; allowed: {list(DIRECTIONS)}")
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise ConfigError(f"audit entry: round must be an integer >= 0, got {round!r}")
        if epsilon is not None and not (isinstance(epsilon, int | float) and epsilon >= 0):
            raise ConfigError(f"audit entry: epsilon must be a number >= 0, got {epsilon!r}")
        fields = {
            "kind": _text(kind, "kind"), "peer": _text(peer, "peer"), "job": _text(job, "job"),
            "manifest": _text(manifest, "manifest"), "stage": _text(stage, "stage"),
            "reason": _text(reason, "reason"),
        }  # fmt: skip
        prot = tuple(_text(p, "a protection") for p in protections)
        details = _details(detail or {})
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, prev = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
                entry = AuditEntry(
                    seq=seq, created_at=_now(), party=self.party, role=self.role,
                    direction=direction, round=round, protections=prot,
                    epsilon=None if epsilon is None else float(epsilon), detail=details,
                    prev_hash=prev, **fields,
                )  # fmt: skip
                body = canonical(entry.body())
                digest = entry_hash(prev, body)
                self._db.execute(
                    "INSERT INTO audit(seq, body, prev_hash, hash) VALUES(?, ?, ?, ?)",
                    (seq, body, prev, digest),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return replace(entry, hash=digest)

    def head(self) -> AuditHead:
        """The entry count and the last entry's hash."""
        with self._lock:
            last = self._db.execute(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return AuditHead(0, GENESIS) if last is None else AuditHead(int(last[0]), str(last[1]))


@dataclass(frozen=True, slots=True)
class AuditInfo:
    """Who keeps a log, read from its file (see :func:`read_audit`)."""

    path: str
    party: str
    role: str


def _open_ro(path: Path) -> sqlite3.Connection:
    """A connection that only reads (a plain one: a read-only one would leave the WAL files)."""
    if not path.is_file():
        raise ConfigError(f"no audit log at {path}")
    try:
        db = sqlite3.connect(path, timeout=30.0)
        db.execute("SELECT seq, body, prev_hash, hash FROM audit LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path} is not an audit log: {exc}") from None
    return db


def read_audit(path: str | os.PathLike[str]) -> tuple[AuditInfo, list[AuditEntry]]:
    """Who keeps the log and its entries as stored (unverified: see :func:`verify_audit`).

    Raises:
        ConfigError: no file, or not an audit log.
        AuditTampered: an entry's body is not an entry.
    """
    file = Path(path)
    db = _open_ro(file)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        rows = db.execute("SELECT seq, body, prev_hash, hash FROM audit ORDER BY seq").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{file} is not an audit log: {exc}") from None
    finally:
        db.close()
    info = AuditInfo(str(file), str(meta.get("party", "")), str(meta.get("role", "")))
    return info, [_parse(file, *row) for row in rows]


def _parse(file: Path, seq: int, body: str, prev_hash: str, digest: str) -> AuditEntry:
    try:
        raw = json.loads(body)
        raw["protections"] = tuple(raw["protections"])
        entry = AuditEntry(**raw, prev_hash=str(prev_hash), hash=str(digest))
    except (TypeError, ValueError, KeyError) as exc:
        raise AuditTampered(
            f"{file}: entry {seq} is not a well-formed entry ({type(exc).__name__}): edited"
        ) from None
    return entry


def _rows(file: Path) -> Iterator[tuple[int, str, str, str]]:
    db = _open_ro(file)
    try:
        yield from db.execute("SELECT seq, body, prev_hash, hash FROM audit ORDER BY seq")
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{file} is not an audit log: {exc}") from None
    finally:
        db.close()


def verify_audit(path: str | os.PathLike[str], *, anchor: AuditHead | None = None) -> AuditHead:
    """Walk the chain of the log at ``path``; return its head if every entry is in place.

    Args:
        path: the log file.
        anchor: a head recorded earlier outside the file (e.g. in a report): the log must still
            hold that entry with that hash, which also catches entries cut off the end.

    Raises:
        ConfigError: no file, or not an audit log.
        AuditTampered: naming the first entry that is edited, missing, inserted or out of order.
    """
    file = Path(path)
    prev, expected = GENESIS, 1
    anchored = anchor is None or anchor.entries == 0
    for seq, body, prev_hash, digest in _rows(file):
        if seq != expected:
            raise AuditTampered(
                f"{file}: entry {expected} is missing (the next stored entry is {seq}): deleted"
            )
        try:
            claimed = json.loads(body).get("seq")
        except (ValueError, AttributeError):
            claimed = None
        if claimed != seq:
            raise AuditTampered(
                f"{file}: entry {seq} holds the content of entry {claimed}: moved, inserted or "
                "reordered"
            )
        if prev_hash != prev:
            raise AuditTampered(
                f"{file}: entry {seq} does not link to entry {seq - 1}: an entry before it was "
                "deleted, inserted or reordered"
            )
        if entry_hash(prev, body) != digest:
            raise AuditTampered(f"{file}: entry {seq} does not match its hash: edited")
        _parse(file, seq, body, prev_hash, digest)
        if anchor is not None and seq == anchor.entries:
            if digest != anchor.hash:
                raise AuditTampered(
                    f"{file}: entry {seq} is not the entry recorded in the anchor "
                    f"(hash {anchor.hash[:16]}...): rewritten"
                )
            anchored = True
        prev, expected = digest, expected + 1
    if not anchored and anchor is not None:
        raise AuditTampered(
            f"{file}: entry {expected} is missing: the anchor recorded {anchor.entries} entries, "
            f"the log holds {expected - 1} (cut off the end)"
        )
    return AuditHead(expected - 1, prev)


def export_audit(path: str | os.PathLike[str]) -> Iterator[str]:
    """The log's entries as JSON Lines (one canonical object per line), oldest first.

    Raises:
        ConfigError: no file, or not an audit log.
        AuditTampered: an entry's body is not an entry.
    """
    _, entries = read_audit(path)
    for entry in entries:
        yield canonical(entry.to_dict())


def job_protections(
    *,
    aggregation: str,
    dp_mode: str,
    secagg_adversary: str = "",
    tls: bool | None = None,
    roster: bool = False,
) -> tuple[str, ...]:
    """Short labels of the protections in force, for audit entries and the report.

    Args:
        aggregation: ``mean``, ``secagg`` or ``he`` (a statistics job is ``he``).
        dp_mode: the job's ``dp.mode``.
        secagg_adversary: ``secagg.adversary`` (``semi_honest`` or ``malicious``) for SecAgg.
        tls: whether this party's connection is TLS (``None``: not known to this party).
        roster: whether parties are pinned to a signed roster.
    """
    labels = [f"aggregation:{aggregation}"]
    if aggregation == "secagg" and secagg_adversary:
        labels.append(f"secagg:{secagg_adversary}")
    if dp_mode != "none":
        labels.append(f"dp:{dp_mode}")
    if tls is not None:
        labels.append("tls" if tls else "no-tls")
    if roster:
        labels.append("roster")
    return tuple(labels)
