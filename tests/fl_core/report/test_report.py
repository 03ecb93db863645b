"""The report's parts: charts, collected facts, and a page that no party's text can inject into."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import job_text

from fl_core.audit import AuditLog
from fl_core.errors import ConfigError
from fl_core.report import build_report, write_report
from fl_core.report._svg import _ticks, line_chart

HOSTILE = '<script>alert(1)</script><img src="https://evil.example/x.png">'


def _run(folder: Path, *, reason: str = "fine") -> Path:
    """A minimal run folder: metrics, the job file and an owner's and a coordinator's log."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.toml").write_text(job_text(rounds=2))
    rounds = [
        {
            "round": r,
            "clients": ["client-0"],
            "num_clients": 1,
            "loss": 1.0 / r,
            "accuracy": 0.5 + r / 10,
        }
        for r in (1, 2)
    ]
    (folder / "metrics.json").write_text(
        json.dumps({"job": "test-job", "status": "completed", "rounds": rounds})
    )
    with AuditLog(folder / "audit" / "client-0.db", party="client-0", role="owner") as log:
        log.append("job_accepted", direction="local", protections=("aggregation:mean", "tls"))
        log.append("refusal", direction="refused", peer="coordinator", round=2, reason=reason)
    with AuditLog(
        folder / "audit" / "coordinator.db", party="coordinator", role="coordinator"
    ) as log:
        log.append("refusal", direction="received", peer="client-0", round=2, reason=reason)
    return folder


def test_ticks_are_round_and_cover_the_range() -> None:
    assert _ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = _ticks(1.0, 37.0)
    assert ticks[0] <= 1.0 and ticks[-1] >= 37.0 and len(ticks) <= 8
    assert _ticks(1, 3, integer=True) == [1, 2, 3]


def test_a_chart_carries_its_points_and_an_empty_one_says_so() -> None:
    svg = line_chart(
        {"a": [(1, 0.5), (2, float("nan")), (3, 0.75)]}, title="t", x_label="round", y_label="y"
    )
    assert re.findall(r'data-x="([^"]*)" data-y="([^"]*)"', svg) == [("1", "0.5"), ("3", "0.75")]
    assert "nothing was measured" in line_chart({}, title="t", x_label="x", y_label="y")


def test_the_facts_come_from_the_run(tmp_path: Path) -> None:
    _, facts = build_report(_run(tmp_path / "run"))
    assert facts["job"]["name"] == "test-job" and facts["job"]["rounds_completed"] == 2
    assert [u["accuracy"] for u in facts["utility"]] == [0.6, 0.7]
    assert {(a["party"], a["verified"]) for a in facts["audit"]} == {
        ("client-0", True),
        ("coordinator", True),
    }
    assert [(r["party"], r["kind"]) for r in facts["refusals"]] == [
        ("client-0", "refusal"),
        ("coordinator", "refusal"),
    ]
    assert any(p["name"] == "transport security (TLS)" for p in facts["protections"])


def test_no_party_can_inject_markup_into_the_page(tmp_path: Path) -> None:
    page, _ = build_report(_run(tmp_path / "run", reason=HOSTILE))
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_write_report_writes_both_files(tmp_path: Path) -> None:
    html, data = write_report(_run(tmp_path / "run"), output=tmp_path / "out")
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert json.loads(data.read_text())["obligations"]["rows"]


def test_a_folder_without_metrics_or_job_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="metrics.json"):
        build_report(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"job": "x", "rounds": []}))
    with pytest.raises(ConfigError, match="give the job file"):
        build_report(tmp_path)


def test_withdrawn_records_are_shown_with_counts_and_rounds(tmp_path: Path) -> None:
    from fl_core.client.ledger import PrivacyLedger

    run = _run(tmp_path / "run")
    (run / "ledgers").mkdir()
    with PrivacyLedger(run / "ledgers" / "client-0.db") as book:
        book.record_use(job="test-job", round=1, dataset="breast_cancer", rows=90)
        book.withdraw("breast_cancer", ["p-1", "p-2", "p-3"])
    page, facts = build_report(run)
    (row,) = facts["withdrawn_records"]["withdrawals"]
    assert (row["owner"], row["dataset"], row["withdrawn"]) == ("client-0", "breast_cancer", 3)
    assert row["rounds_used"] == ["test-job:1"]
    assert facts["withdrawn_records"]["total"] == 3
    assert next(o for o in facts["obligations"]["rows"] if o["key"] == "withdrawal")["in_force"]
    assert "test-job:1" in page and "p-1" not in page


def test_deidentification_is_shown_from_the_owners_log(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    with AuditLog(run / "audit" / "client-0.db", party="client-0", role="owner") as log:
        log.append(
            "deidentification", direction="local",
            detail={"pseudonymized": ["patient_id"], "dropped": ["name"],
                    "quasi_identifiers": ["age_band", "region"], "smallest_class": 20,
                    "min_k": 5, "rows": 120, "withdrawn_excluded": 1},
        )  # fmt: skip
    page, facts = build_report(run)
    (row,) = facts["deidentification"]
    assert (row["owner"], row["smallest_class"], row["min_k"]) == ("client-0", 20, 5)
    assert row["dropped"] == ["name"] and row["log_verified"]
    assert "patient_id" in page and "age_band, region" in page
