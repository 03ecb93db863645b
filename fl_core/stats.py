"""Statistics jobs: the data owner that encrypts its statistics, the Python API, the simulator.

* :class:`StatsOwner`: a data owner of a ``job.kind = "stats"`` job. It answers ``he.contribute``
  from its local table (numpy): it checks the task against its policy (an owner whose minimum
  cohort exceeds the job's k refuses), checks the key holder's signed public context, computes its
  sufficient statistics in the clear and sends only their encryption, signed with its identity
  key (:func:`he.encrypt_statistics`). Raw rows never leave it.
* :func:`compute_statistics`: coordinator, key holder and owners in one process (in-memory
  transport), for notebooks and tests.
* :func:`simulate_stats`: the job's data set split among ``data.num_clients`` simulated owners,
  in memory, or over loopback gRPC with the key holder and every owner as a separate process
  (``bulwark keyholder``, ``bulwark stats-owner``), exactly as in a deployment.

The coordinator side is :class:`fl_core.coordinator.stats_job.StatsJob`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .aggregators import create_aggregator
from .audit import AuditLog
from .client.policy import OwnerPolicy
from .client.runtime import ClientOptions, Participant
from .config import JobConfig
from .coordinator.events import Event
from .coordinator.service import Coordinator
from .coordinator.stats_job import NO_WEIGHTS, StatsJob, statistics_of
from .coordinator.store import Store
from .data.federated import WithdrawnMask
from .errors import CodecError, ConfigError, PolicyRefused
from .federation import Roster
from .he_job import (
    STAGE_KEYS,
    SignedContext,
    advertisement_fields,
    map_he_errors,
    masked,
    owner_masking,
    owner_min_contributors,
    raw_public_key,
    trusted_keyholders,
)
from .keyholder import SimulatedKeys
from .payload import Payload
from .strategies import create_strategy
from .supervise import supervise, supervise_processes
from .transport.base import ClientTransport, JobDone, Task

if TYPE_CHECKING:
    import he

Table = Mapping[str, npt.ArrayLike] | npt.ArrayLike
"""An owner's rows: column name -> values, or a 2-D array in the spec's column order."""

TARGET_COLUMN = "target"
"""The name of a registered data set's label or regression target in a statistics table."""

STAGE_CONTRIBUTE = "he.contribute"


class StatsOwner(Participant):
    """A data owner answering a statistics job from its local table.

    Args:
        name: the enrolled name (its receipts' owner id).
        job: the job file the owner agreed to (``job.kind = "stats"``).
        table: the owner's rows (see :data:`Table`); never sent.
        identity_key: its Ed25519 identity key (joins and signs receipts; fresh when omitted).
        policy: its rules (purpose, minimum cohort, trusted key holders).
        options: timing of retries and polls.
        audit: the owner's audit log.
        tls: whether its connection to the coordinator is TLS (``policy.require_tls``).
    """

    role = "owner"

    def __init__(
        self,
        *,
        name: str,
        job: JobConfig,
        table: Table,
        identity_key: Ed25519PrivateKey | None = None,
        policy: OwnerPolicy | None = None,
        options: ClientOptions | None = None,
        roster: Roster | None = None,
        audit: AuditLog | None = None,
        tls: bool | None = None,
    ) -> None:
        super().__init__(
            name=name,
            job=job,
            identity_key=identity_key,
            options=options,
            roster=roster,
            audit=audit,
            tls=tls,
        )
        if job.stats is None:
            raise ConfigError("a statistics owner needs a job with job.kind = 'stats'")
        self.policy = policy or OwnerPolicy()
        self.table = table
        self._spec = job.stats.spec()
        self._mask_keys: dict[tuple[int, int], he.MaskingKey] = {}  # (round, attempt), in memory

    def check_job(self) -> None:
        """The owner's policy decides whether it takes part (purpose, k, protections)."""
        if self.job.job.kind != "stats":
            raise PolicyRefused("not a statistics job")
        self.policy.check_job(
            self.job,
            coordinator=self.coordinator,
            tls=self.tls,
            roster=self.roster,
            columns=tuple(self._spec.columns),
        )

    def handle(self, task: Task) -> Payload:
        """Check the task and the key holder's context; return encrypted, signed statistics."""
        import he

        header = task.header
        if header.job_id != self.job.job.name:
            raise PolicyRefused(f"task for job {header.job_id!r}, not {self.job.job.name!r}")
        self.check_job()  # the whole job, against the policy, before any data is read
        self.policy.check_task(self.job, stage=header.stage, round=header.round)
        attempt_key = (header.round, header.attempt)
        if header.stage == STAGE_KEYS:
            if not masked(self.job):
                raise PolicyRefused("this job does not mask contributions (he.masking)")
            if attempt_key in self._mask_keys:
                raise PolicyRefused("a second he.keys task in one attempt")
            key, advertisement = he.MaskingKey.generate(
                identity_key=self.identity_key,
                owner_id=self.name,
                job_id=self.job.job.name,
                round=header.round,
                attempt=header.attempt,
            )
            self._mask_keys = {attempt_key: key}  # a new attempt forgets the old keys
            return Payload(advertisement_fields(advertisement))
        if header.stage != STAGE_CONTRIBUTE:
            raise CodecError(f"stage {header.stage!r} is not an owner's stage")
        k = owner_min_contributors(self.job, self.policy)
        public = SignedContext.from_payload(task.payload).open(
            self.job, trusted=trusted_keyholders(self.job, self.policy)
        )
        masking = owner_masking(
            self.job,
            self.policy,
            task.payload,
            self._mask_keys.get(attempt_key),
            k=k,
            own_identity=raw_public_key(self.identity_key),
            roster_owners=self.roster.keys("owner") if self.roster is not None else None,
        )
        with map_he_errors("encrypting the owner's statistics"):
            blob = he.encrypt_statistics(
                public,
                self.table,
                spec=self._spec,
                job_id=self.job.job.name,
                round=header.round,
                owner_id=self.name,
                signing_key=self.identity_key,
                min_contributors=k,
                attempt=header.attempt,
                masking=masking,
            )
        return Payload({"he.contribution": blob})


# --- tables ------------------------------------------------------------------------------------


def dataset_tables(
    job: JobConfig, *, withdrawn: WithdrawnMask | None = None
) -> list[dict[str, npt.NDArray[np.float64]]]:
    """The job's registered data set (train and test rows, raw values) split among its owners.

    Columns are the data set's feature names plus :data:`TARGET_COLUMN`. The rows are dealt
    out by a seeded permutation (``data.seed``) into ``data.num_clients`` near-equal parts.
    Each row's record id is ``"<dataset>:<row index>"`` (train rows, then test rows, as in
    :func:`fl_core.data.split_for_clients`); rows that ``withdrawn`` marks are left out.

    Raises:
        ConfigError: the data set has no named columns, or is unavailable.
    """
    names, rows, parts, _ = _dataset_parts(job, withdrawn)
    return [{n: rows[p, i] for i, n in enumerate(names)} for p in parts]


def dataset_share_ids(
    job: JobConfig, *, withdrawn: WithdrawnMask | None = None
) -> list[tuple[str, ...]]:
    """The record ids of each owner's part in :func:`dataset_tables` (same order, same rule)."""
    _, _, parts, ids = _dataset_parts(job, withdrawn)
    return [tuple(ids[p].tolist()) for p in parts]


def _dataset_parts(
    job: JobConfig, withdrawn: WithdrawnMask | None
) -> tuple[list[str], npt.NDArray[np.float64], list[npt.NDArray[np.intp]], npt.NDArray[np.str_]]:
    from .data import load_dataset

    data = load_dataset(job.data.dataset, path=job.data.path or None)
    if not data.feature_names:
        raise ConfigError(f"data set {job.data.dataset!r} has no named columns for statistics")
    x = np.concatenate([data.x_train, data.x_test]).astype(np.float64)
    y = np.concatenate([data.y_train, data.y_test]).astype(np.float64)
    names = [*data.feature_names, TARGET_COLUMN]
    rows = np.column_stack([x.reshape(len(x), -1), y])
    order = np.random.default_rng(job.data.seed).permutation(len(rows))
    parts = [np.sort(p) for p in np.array_split(order, job.data.num_clients)]
    ids = np.array([f"{data.name}:{i}" for i in range(len(rows))], dtype=np.str_)
    if withdrawn is not None:
        parts = [p[~withdrawn(ids[p])] for p in parts]
    return names, rows, parts, ids


def table_without(
    table: dict[str, npt.NDArray[np.float64]], *, id_column: str, withdrawn: WithdrawnMask | None
) -> tuple[dict[str, npt.NDArray[np.float64]], tuple[str, ...]]:
    """``table`` without its id column and without the rows that ``withdrawn`` marks.

    Ids are the column's values as integers in text (a ``.csv`` or ``.npz`` table is numeric).

    Returns:
        The table the owner computes on, and the record ids of its rows.

    Raises:
        ConfigError: the id column is missing, or holds values that are not whole numbers.
    """
    if id_column not in table:
        raise ConfigError(f"the owner's table has no id column {id_column!r}")
    raw = table[id_column]
    if not (np.isfinite(raw).all() and (raw == np.round(raw)).all()):
        raise ConfigError(f"id column {id_column!r} holds values that are not whole numbers")
    ids = np.array([str(int(v)) for v in raw.tolist()], dtype=np.str_)
    keep = np.ones(len(ids), dtype=np.bool_) if withdrawn is None else ~withdrawn(ids)
    rest = {k: v[keep] for k, v in table.items() if k != id_column}
    return rest, tuple(ids[keep].tolist())


def load_table(path: Path) -> dict[str, npt.NDArray[np.float64]]:
    """Read an owner's table from a ``.csv`` or an ``.npz`` file.

    A ``.csv`` file starts with a header row of column names; an ``.npz`` file holds one 1-D
    array per column and is read with ``allow_pickle=False``.

    Raises:
        ConfigError: unreadable file, unknown suffix, non-numeric values or ragged columns.
    """
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                table = {k: np.asarray(npz[k], dtype=np.float64).reshape(-1) for k in npz.files}
        elif path.suffix == ".csv":
            with path.open(encoding="utf-8") as fh:
                header = [h.strip() for h in fh.readline().strip().split(",")]
            values = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
            if values.shape[1] != len(header) and values.size:
                raise ConfigError(f"{path}: {values.shape[1]} values per row, {len(header)} names")
            table = {h: values[:, i] if values.size else np.zeros(0) for i, h in enumerate(header)}
        else:
            raise ConfigError(f"{path}: a table must be a .csv or .npz file")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read table {path}: {exc}") from exc
    if len({len(v) for v in table.values()}) > 1:
        raise ConfigError(f"{path}: columns have different lengths")
    return table


def deidentify_table(
    table: dict[str, npt.NDArray[np.float64]],
    *,
    job: JobConfig,
    policy: OwnerPolicy,
    key: bytes,
    audit: AuditLog | None,
) -> dict[str, npt.NDArray[np.float64]]:
    """A statistics owner's table after its policy's de-identification (audited).

    Direct identifiers are dropped, k-anonymity is checked over the quasi-identifiers, and
    identifier columns (pseudonymized: text, never a statistic) leave the table; a job whose
    statistics read an identifier column is refused.

    Raises:
        PolicyRefused: the job reads an identifier, or the table is below the policy's k.
        ConfigError: a declared column the table lacks.
    """
    if not policy.deidentifies:
        return table
    assert job.stats is not None  # noqa: S101 - a statistics job, checked by the caller
    deid = policy.deidentifier(key)
    try:
        deid.check_used(tuple(job.stats.spec().columns), where="the job's statistics")
        out, report = deid.apply(table)
    except PolicyRefused as exc:
        if audit is not None:
            audit.append(
                "deidentification_refused", direction="refused", job=job.job.name,
                manifest=job.sha256, reason=exc.reason[:2000],
            )  # fmt: skip
        raise
    if audit is not None:
        audit.append(
            "deidentification", direction="local", job=job.job.name, manifest=job.sha256,
            detail=report.detail(),
        )  # fmt: skip
    return {k: v for k, v in out.items() if k not in deid.pseudonymize_columns}


# --- running a statistics job on one machine ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsOutcome:
    """How a statistics job ended, with its result when it completed."""

    done: JobDone
    statistics: dict[str, Any] | None
    metrics: dict[str, object]
    seconds: float
    transport: str
    output: Path | None = None
    participant_errors: dict[str, str] = field(default_factory=dict)


def stats_coordinator(
    job: JobConfig,
    store: Store,
    runner: StatsJob,
    events: Callable[[Event], None] | None = None,
    *,
    roster: Roster | None = None,
    identity_key: Ed25519PrivateKey | None = None,
    name: str = "coordinator",
    audit: AuditLog | None = None,
) -> Coordinator:
    """A coordinator that runs ``job`` as a statistics job (with a roster: members only)."""
    return Coordinator(
        job,
        store=store,
        initial_weights=NO_WEIGHTS,
        strategy=create_strategy(job.strategy),
        aggregator=create_aggregator(job),
        events=events,
        runner=runner,
        roster=roster,
        identity_key=identity_key,
        name=name,
        audit=audit,
    )


def _audit(folder: Path | None, party: str, role: str) -> AuditLog | None:
    """The audit log of ``party`` in ``folder/audit/`` (none without a folder)."""
    if folder is None:
        return None
    return AuditLog(folder / "audit" / f"{party}.db", party=party, role=role)


def compute_statistics(
    job: JobConfig,
    tables: Mapping[str, Table] | Sequence[Table],
    *,
    policies: Mapping[str, OwnerPolicy] | None = None,
    min_contributors: int | None = None,
    store: Store | None = None,
    events: Callable[[Event], None] | None = None,
    audit_dir: Path | None = None,
) -> StatsOutcome:
    """Run a statistics job with every party in this process (in-memory transport).

    Args:
        job: a ``job.kind = "stats"`` job.
        tables: owner name -> table, or a list of tables (owners ``client-0``, ``client-1``...).
        policies: per-owner policies (default: trust this run's key holder, nothing else).
        min_contributors: the key holder's k, if above the job's.
        store: the coordinator's store (default: a temporary SQLite file).
        events: receives the coordinator's progress events.
        audit_dir: keep every party's audit log in ``audit_dir/audit/<party>.db``.

    Raises:
        ConfigError: not a statistics job, or a key holder that cannot start.
    """
    from .transport.inmemory import InMemoryTransport

    named = dict(tables) if isinstance(tables, Mapping) else {
        f"client-{i}": t for i, t in enumerate(tables)
    }  # fmt: skip
    keys = SimulatedKeys.generate(list(named))
    owners: list[Participant] = [
        StatsOwner(
            name=name,
            job=job,
            table=table,
            identity_key=keys.owners[name],
            policy=keys.owner_policy((policies or {}).get(name)),
            options=ClientOptions(long_poll_s=30.0),
            audit=_audit(audit_dir, name, "owner"),
            tls=False,
        )
        for name, table in named.items()
    ]
    keyholder = keys.keyholder_participant(
        job, min_contributors=min_contributors, audit=_audit(audit_dir, "keyholder", "keyholder")
    )
    runner = StatsJob()
    with tempfile.TemporaryDirectory(prefix="bulwark-stats-") as tmp:
        own = store is None
        db = store or Store(Path(tmp) / "state.db")
        log = _audit(audit_dir, "coordinator", "coordinator")
        coordinator = stats_coordinator(job, db, runner, events, audit=log)
        started = time.perf_counter()
        participants = [keyholder, *owners]
        errors: dict[str, str] = {}

        async def main() -> JobDone:
            transports = [InMemoryTransport(coordinator, limits=job.limits) for _ in participants]
            members = {
                p.name: asyncio.ensure_future(_member(p, t))
                for p, t in zip(participants, transports, strict=True)
            }
            try:
                done = await supervise(
                    job, coordinator.run(), members, owners={o.name for o in owners},
                    errors=errors,
                )  # fmt: skip
                await asyncio.wait(members.values(), timeout=30)
            finally:
                for task in members.values():
                    task.cancel()
                await asyncio.gather(*members.values(), return_exceptions=True)
            for name, task in members.items():
                if not task.cancelled() and task.result():
                    errors.setdefault(name, str(task.result()))
            return done

        try:
            done = asyncio.run(main())
            metrics = db.metrics(job.job.name)
        finally:
            if own:
                db.close()
            for party in [log, *(p.audit for p in participants)]:
                if party is not None:
                    party.close()
    return StatsOutcome(
        done=done,
        statistics=runner.result,
        metrics=metrics[0] if metrics else {},
        seconds=time.perf_counter() - started,
        transport="inmemory",
        participant_errors=errors,
    )


async def _member(participant: Participant, transport: ClientTransport) -> str | None:
    """Run one in-memory participant; its error text, or ``None`` when it ended normally."""
    try:
        await participant.run(transport)
    except Exception as exc:  # noqa: BLE001 - reported as this participant's error
        return f"{type(exc).__name__}: {exc}"
    return None


def simulate_stats(
    job: JobConfig,
    *,
    transport: str = "inmemory",
    output: Path | None = None,
    job_path: Path | None = None,
    events: Callable[[Event], None] | None = None,
) -> StatsOutcome:
    """Split the job's data set among its simulated owners and run the job on this machine.

    With ``transport="grpc"`` the coordinator serves loopback gRPC and the key holder and the
    owners are separate ``bulwark keyholder`` / ``bulwark stats-owner`` processes.

    Raises:
        ConfigError: an unknown transport, a job that is not a statistics job, or no data.
    """
    if transport not in ("inmemory", "grpc"):
        raise ConfigError(f"transport {transport!r} is not one of ['inmemory', 'grpc']")
    if job.job.kind != "stats":
        raise ConfigError("job.kind must be 'stats' for a statistics job")
    with tempfile.TemporaryDirectory(prefix="bulwark-stats-") as tmp:
        work = output or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "state.db").unlink(missing_ok=True)
        store = Store(work / "state.db")
        try:
            if transport == "inmemory":
                tables = dataset_tables(job)
                outcome = compute_statistics(
                    job, tables, store=store, events=events, audit_dir=output
                )
            else:
                if job_path is None:
                    job_path = work / "job.toml"
                    job_path.write_text(job.source)
                outcome = _simulate_grpc(job, store, work, job_path, events)
        finally:
            store.close()
        if output is not None:
            write_statistics(output, job=job, outcome=outcome)
    return StatsOutcome(
        done=outcome.done,
        statistics=outcome.statistics,
        metrics=outcome.metrics,
        seconds=outcome.seconds,
        transport=transport,
        output=output,
        participant_errors=outcome.participant_errors,
    )


def _simulate_grpc(
    job: JobConfig,
    store: Store,
    work: Path,
    job_path: Path,
    events: Callable[[Event], None] | None,
) -> StatsOutcome:
    from .transport.grpc_server import serve

    names = [f"client-{i}" for i in range(job.data.num_clients)]
    files = SimulatedKeys.generate(names).write(work / "identities")
    runner = StatsJob()
    log = AuditLog(work / "audit" / "coordinator.db", party="coordinator", role="coordinator")
    coordinator = stats_coordinator(job, store, runner, events, audit=log)
    started = time.perf_counter()
    errors: dict[str, str] = {}
    cli = [sys.executable, "-m", "fl_core.cli"]
    audit_dir = work / "audit"

    async def main() -> JobDone:
        handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
        common = ["--coordinator", f"127.0.0.1:{handle.port}", "--job", str(job_path), "--quiet"]
        commands = {
            "keyholder": [
                *cli, "keyholder", *common, "--enrolment", str(files.enrolment),
                "--identity", str(files.keyholder_identity),
                "--audit", str(audit_dir / "keyholder.db"),
            ],
            **{
                name: [
                    *cli, "stats-owner", *common, "--partition", str(i), "--name", name,
                    "--identity", str(files.owner_identities[name]),
                    "--policy", str(files.owner_policy),
                    "--audit", str(audit_dir / f"{name}.db"),
                ]
                for i, name in enumerate(names)
            },
        }  # fmt: skip
        procs = {
            name: await asyncio.create_subprocess_exec(
                *command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            for name, command in commands.items()
        }
        try:
            return await supervise_processes(
                job, coordinator.run(), procs, owners=set(names), errors=errors
            )
        finally:
            await handle.stop(grace=1.0)

    try:
        done = asyncio.run(main())
    finally:
        log.close()
    metrics = store.metrics(job.job.name)
    return StatsOutcome(
        done=done,
        statistics=runner.result or statistics_of(metrics),
        metrics=metrics[0] if metrics else {},
        seconds=time.perf_counter() - started,
        transport="grpc",
        participant_errors=errors,
    )


def write_statistics(output: Path, *, job: JobConfig, outcome: StatsOutcome) -> Path:
    """Write ``statistics.json`` (status, contributors, the statistics, round metrics)."""
    output.mkdir(parents=True, exist_ok=True)
    round_metrics = {k: v for k, v in outcome.metrics.items() if k != "statistics"}
    summary = {
        "job": job.job.name,
        "status": outcome.done.status,
        "reason": outcome.done.reason,
        "transport": outcome.transport,
        "seconds": round(outcome.seconds, 3),
        "statistics": outcome.statistics,
        "round": round_metrics,
    }
    path = output / "statistics.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path
