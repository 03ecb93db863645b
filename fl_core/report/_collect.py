"""Gather what a run left behind into the report's facts (the JSON twin).

Sources, in a run folder (what ``bulwark simulate --output`` writes): ``metrics.json`` (rounds,
utility, the job's guarantee), ``state.db`` (the pinned job file), ``audit/*.db`` (each party's
audit log: releases with the owner's own epsilon, refusals, decryptions) and ``ledgers/*.db``
(each owner's privacy ledger). Further audit logs and ledgers may be named (a deployed
coordinator keeps its audit log beside its state file). Every audit chain and ledger is
verified here; what fails verification is reported as failed, never silently used as true.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..audit import AuditEntry, read_audit, verify_audit
from ..client.ledger import PrivacyLedger
from ..config import JobConfig, parse_job
from ..errors import ConfigError, FlCoreError
from ._obligations import DISCLAIMER, OBLIGATIONS, in_force

REPORT_VERSION = 1

ROLE_TEXT = {
    "owner": "data owner: holds its raw records, trains or computes locally, enforces its policy",
    "coordinator": "coordinator: runs the job, holds the global model and only aggregates",
    "keyholder": "HE key holder: holds the secret key, decrypts only sums of at least k owners",
}

THREAT_MODEL = (
    "The coordinator may be malicious: it may lie about dropouts, send different views to "
    "different owners, invent peers, replay or retry rounds and change anything in a task. Each "
    "data owner and the key holder therefore compute every parameter they act on from their own "
    "pinned job file, policy and roster, and treat each task as a claim to check. Up to the "
    "job's stated fraction of owners may collude with the coordinator or drop out."
)


def _job_from(run_dir: Path, name: str) -> JobConfig:
    state = run_dir / "state.db"
    if state.is_file():
        db = sqlite3.connect(state, timeout=30.0)  # reads only (read-only mode leaves WAL files)
        try:
            row = db.execute("SELECT config FROM jobs WHERE job_id = ?", (name,)).fetchone()
        except sqlite3.DatabaseError:
            row = None
        finally:
            db.close()
        if row is not None:
            return parse_job(str(row[0]))
    job_file = run_dir / "job.toml"
    if job_file.is_file():
        return parse_job(job_file.read_text())
    raise ConfigError(
        f"{run_dir}: neither state.db nor job.toml holds job {name!r}; give the job file "
        "(bulwark report --job)"
    )


def protections(job: JobConfig, tls: list[bool]) -> list[dict[str, str]]:
    """The protections in force and what each holds against."""
    kind = "he" if job.job.kind == "stats" else job.aggregation.kind
    out: list[dict[str, str]] = [
        {
            "name": "federated computation",
            "setting": f"job.kind = {job.job.kind!r}",
            "holds_against": "any other party seeing raw records: they never leave the owner",
        }
    ]
    if kind == "mean":
        out.append({
            "name": "plain weighted mean",
            "setting": "aggregation.kind = 'mean'",
            "holds_against": "nothing beyond the above: the coordinator sees each owner's update",
        })  # fmt: skip
    elif kind == "secagg":
        s = job.secagg
        out.append({
            "name": "secure aggregation (SecAgg / SecAgg+)",
            "setting": f"adversary = {s.adversary!r}, threshold = {s.threshold or 'derived'}, "
            f"corrupt_rate = {s.corrupt_rate:g}, dropout_rate = {s.dropout_rate:g}",
            "holds_against": "a coordinator that wants one owner's update: it learns only the "
            "sum over the surviving cohort, even when it lies about dropouts",
        })  # fmt: skip
    else:
        h = job.he
        out.append({
            "name": "homomorphic encryption (CKKS / BFV, TenSEAL)",
            "setting": f"k = he.min_contributors = {h.min_contributors}, "
            f"flood_bits = {h.flood_bits}",
            "holds_against": "a coordinator that wants one owner's values: it adds ciphertexts "
            "it cannot read; the key holder decrypts only sums of at least k signed "
            "contributions (assumes the key holder and the coordinator do not collude)",
        })  # fmt: skip
    dp = job.dp
    if dp.mode != "none":
        target = f"epsilon = {dp.epsilon:g}" if dp.epsilon else f"z = {dp.noise_multiplier:g}"
        out.append({
            "name": f"differential privacy ({dp.mode})",
            "setting": f"{target}, delta = {dp.delta:g}, clip = {dp.clip:g}",
            "holds_against": _DP_AGAINST.get(dp.mode, _DP_AGAINST["central"])
            + "; each owner charges its own ledger before it releases",
        })  # fmt: skip
    if any(tls):
        setting = "every owner over TLS" if all(tls) else f"{sum(tls)} of {len(tls)} owners"
        out.append({
            "name": "transport security (TLS)",
            "setting": setting,
            "holds_against": "eavesdroppers and tampering on the network",
        })  # fmt: skip
    elif tls:
        out.append({
            "name": "no transport security",
            "setting": f"none of {len(tls)} owners used TLS (in memory or loopback)",
            "holds_against": "nothing on a network: acceptable only on one machine",
        })  # fmt: skip
    return out


_DP_AGAINST = {
    "central": "anyone who sees the released models (the coordinator adds the noise, so it "
    "sees the clipped sum before noise: central DP does not hold against the coordinator)",
    "dpsgd": "anyone who sees an owner's update or the released models, the coordinator "
    "included: each owner's training is itself differentially private",
    "distributed": "anyone who sees the aggregate or the released models, the coordinator "
    "included: owners add the noise in shares, hidden by secure aggregation",
    "fedsgd": "anyone who sees the aggregate or the released models, the coordinator "
    "included: owners add the noise in shares, hidden by secure aggregation",
}


def _audit_logs(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], list[AuditEntry]]:
    logs: list[dict[str, Any]] = []
    entries: list[AuditEntry] = []
    for path in paths:
        row: dict[str, Any] = {"path": str(path)}
        try:
            info, mine = read_audit(path)
            row.update(party=info.party, role=info.role)
        except FlCoreError as exc:
            row.update(party=path.stem, role="", verified=False, error=str(exc), entries=0)
            logs.append(row)
            continue
        try:
            head = verify_audit(path)
            row.update(verified=True, entries=head.entries, head=head.hash, error="")
        except FlCoreError as exc:
            row.update(verified=False, entries=len(mine), head="", error=str(exc))
        logs.append(row)
        entries.extend(mine)
    return logs, entries


def _ledgers(paths: Sequence[Path], job_name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in paths:
        row: dict[str, Any] = {"owner": path.stem, "path": str(path)}
        try:
            with PrivacyLedger(path) as book:
                rows = book.verify()
                entries = book.entries()
                withdrawals = book.withdrawals()
                names = sorted({e.dataset for e in entries})
                caps = []
                for name in names:  # each entry carries the data set's composed total
                    cap = book.cap(name)
                    spent = [e.epsilon_total for e in entries if e.dataset == name][-1]
                    caps.append(
                        {"dataset": name, "cap": cap.epsilon if cap else None, "spent": spent}
                    )
            mine = [
                {"round": e.round, "epsilon_total": e.epsilon_total, "mechanism": e.mechanism}
                for e in entries
                if e.job == job_name
            ]
            withdrawn = [
                {"dataset": w.dataset, "requested": w.requested, "withdrawn": w.new,
                 "at": w.created_at, "rounds_used": [f"{j}:{r}" for j, r in w.rounds_used]}
                for w in withdrawals
            ]  # fmt: skip
            row.update(
                verified=True,
                audit_rows=rows,
                error="",
                releases=mine,
                datasets=caps,
                withdrawals=withdrawn,
            )
        except FlCoreError as exc:
            row.update(verified=False, error=str(exc), releases=[], datasets=[], withdrawals=[])
        out.append(row)
    return out


def _names(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def collect(
    run_dir: Path,
    *,
    audit_logs: Sequence[Path] = (),
    ledgers: Sequence[Path] = (),
    job: JobConfig | None = None,
) -> dict[str, Any]:
    """The report's facts about the run in ``run_dir`` (the JSON twin of the HTML report).

    Raises:
        ConfigError: the folder has no ``metrics.json``, or the job cannot be found.
    """
    metrics_file = run_dir / "metrics.json"
    stats_file = run_dir / "statistics.json"
    released: dict[str, Any] | None = None
    if not metrics_file.is_file() and stats_file.is_file():  # a statistics job's one round
        metrics_file = stats_file
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{run_dir / 'metrics.json'}: cannot read the run's metrics ({exc})"
        ) from None
    job = job or _job_from(run_dir, str(metrics.get("job", "")))
    rounds: list[dict[str, Any]] = list(metrics.get("rounds", []))
    if metrics_file == stats_file:
        rounds = [metrics["round"]] if metrics.get("round") else []
        result = metrics.get("statistics") or {}
        released = {
            "count": result.get("count"),
            "contributors": list(result.get("contributors", [])),
            "statistics": sorted(k for k in result if k not in ("count", "contributors")),
        }
    log_paths = [*sorted((run_dir / "audit").glob("*.db")), *audit_logs]
    logs, entries = _audit_logs(list(dict.fromkeys(log_paths)))
    verified = {row["party"]: row["verified"] for row in logs}
    ledger_paths = [*sorted((run_dir / "ledgers").glob("*.db")), *ledgers]
    books = _ledgers(list(dict.fromkeys(ledger_paths)), job.job.name)

    parties = [
        {"name": row["party"], "role": row["role"], "duty": ROLE_TEXT.get(row["role"], "")}
        for row in logs
    ]
    known = {p["name"] for p in parties}
    for name in sorted({c for r in rounds for c in r.get("clients", [])} - known):
        parties.append({"name": name, "role": "owner", "duty": ROLE_TEXT["owner"]})

    owner_eps: dict[str, list[dict[str, float]]] = {}
    for e in entries:
        if e.role == "owner" and e.kind == "release" and e.epsilon is not None:
            owner_eps.setdefault(e.party, []).append({"round": e.round, "epsilon": e.epsilon})
    source = "owners' audit logs"
    if not owner_eps:  # no owner logs: what the owners reported with their releases
        source = "metrics.json (as the owners reported it)"
        for r in rounds:
            for name, eps in dict(r.get("owner_epsilon", {})).items():
                owner_eps.setdefault(name, []).append({"round": r["round"], "epsilon": eps})
    job_eps = [
        {"round": r["round"], "epsilon": r["epsilon"], "delta": r.get("delta", job.dp.delta)}
        for r in rounds
        if isinstance(r.get("epsilon"), int | float)
    ]

    refusals = [
        {
            "party": e.party,
            "role": e.role,
            "peer": e.peer,
            "round": e.round,
            "stage": e.stage,
            "kind": e.kind,
            "reason": e.reason,
            "at": e.created_at,
            "log_verified": verified.get(e.party, False),
        }  # fmt: skip
        for e in entries
        if e.direction == "refused"
        or (e.role == "coordinator" and e.kind in ("refusal", "rejected", "round_aborted"))
    ]
    deidentification = [
        {
            "owner": e.party,
            "at": e.created_at,
            "refused": e.direction == "refused",
            "reason": e.reason,
            "pseudonymized": list(_names(e.detail.get("pseudonymized"))),
            "dropped": list(_names(e.detail.get("dropped"))),
            "quasi_identifiers": list(_names(e.detail.get("quasi_identifiers"))),
            "smallest_class": e.detail.get("smallest_class"),
            "min_k": e.detail.get("min_k"),
            "rows": e.detail.get("rows"),
            "withdrawn_excluded": e.detail.get("withdrawn_excluded"),
            "log_verified": verified.get(e.party, False),
        }
        for e in entries
        if e.role == "owner"
        and e.kind in ("deidentification", "deidentification_refused", "withdrawn_excluded")
    ]
    utility = [
        {
            "round": r["round"],
            "accuracy": r.get("accuracy"),
            "loss": r.get("loss"),
            "train_loss": r.get("train_loss"),
            "contributors": r.get("num_clients"),
        }
        for r in rounds
    ]
    tls = [
        "tls" in e.protections for e in entries if e.role == "owner" and e.kind == "job_accepted"
    ]
    kind = "he" if job.job.kind == "stats" else job.aggregation.kind
    facts = {
        "purpose": bool(job.job.purpose),
        "federated": True,
        "data_scope": False,
        "secagg": kind == "secagg",
        "he": kind == "he",
        "dp": job.dp.mode != "none",
        "tls": bool(tls) and all(tls),
        "parties": False,
        "audit": bool(logs),
        "report": True,
        "withdrawal": any(b["withdrawals"] for b in books),
    }
    obligations = [
        {
            "measure": o.measure,
            "serves": o.serves,
            "pipl": o.pipl,
            "gdpr": o.gdpr,
            "in_force": in_force(o.key, facts),
            "key": o.key,
        }  # fmt: skip
        for o in OBLIGATIONS
    ]
    return {
        "report": {
            "version": REPORT_VERSION,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_dir": str(run_dir),
        },
        "job": {
            "name": job.job.name,
            "kind": job.job.kind,
            "purpose": job.job.purpose,
            "rounds_planned": job.job.rounds,
            "rounds_completed": len(rounds),
            "status": metrics.get("status", ""),
            "reason": metrics.get("reason", ""),
            "manifest_sha256": job.sha256,
            "dataset": job.data.dataset,
            "model": job.model.name,
            "transport": metrics.get("transport", ""),
            "seconds": metrics.get("seconds"),
        },  # fmt: skip
        "parties": parties,
        "threat_model": THREAT_MODEL,
        "protections": protections(job, tls),
        "epsilon": {"owners": owner_eps, "job": job_eps, "source": source},
        "refusals": refusals,
        "withdrawn_records": {
            "supported": True,
            "note": "records an owner withdrew by id (bulwark data withdraw), from its verified "
            "privacy ledger: every task after the withdrawal leaves them out; 'rounds used' "
            "are the rounds that read the data set before it",
            "withdrawals": [
                {"owner": b["owner"], **w} for b in books if b["verified"] for w in b["withdrawals"]
            ],
            "total": sum(w["withdrawn"] for b in books if b["verified"] for w in b["withdrawals"]),
        },
        "deidentification": deidentification,
        "utility": utility,
        "statistics_released": released,
        "audit": logs,
        "ledgers": books,
        "obligations": {"disclaimer": DISCLAIMER, "rows": obligations},
    }
