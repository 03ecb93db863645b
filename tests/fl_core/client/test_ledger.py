from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fl_core.client.ledger import PrivacyLedger, render_budget
from fl_core.dp.accounting import GaussianEvent, SkellamEvent, compose
from fl_core.errors import BudgetExceeded, ConfigError, LedgerTampered

DELTA = 1e-5
# A distributed-DP round (Skellam events need no torch, so subprocesses start fast).
ROUND = SkellamEvent(mu=2000.0, l1_sensitivity=40.0, l2_sensitivity=20.0)
REPO = Path(__file__).resolve().parents[3]


def _first_refused_round(cap: float, event: SkellamEvent) -> int:
    k = 1
    while compose([event] * k, delta=DELTA).epsilon <= cap:
        k += 1
    return k


def _run_job(path: Path, rounds: int, *, reopen: bool) -> int:
    ledger = PrivacyLedger(path)
    try:
        for r in range(1, rounds + 1):
            if reopen:  # a client process killed and restarted between rounds
                ledger.close()
                ledger = PrivacyLedger(path)
            try:
                ledger.charge(
                    job="job-1",
                    round=r,
                    dataset="wards",
                    mechanism="dp-fedavg-skellam",
                    event=ROUND,
                )
            except BudgetExceeded:
                return r
    finally:
        ledger.close()
    return -1


@pytest.mark.parametrize("reopen", [False, True])
def test_job_is_refused_at_the_right_round(tmp_path: Path, reopen: bool) -> None:
    # Prepare
    path = tmp_path / "owner.db"
    with PrivacyLedger(path) as ledger:
        ledger.set_cap("wards", epsilon=3.0, delta=DELTA)
    expected = _first_refused_round(3.0, ROUND)
    # Execute
    refused_at = _run_job(path, expected + 3, reopen=reopen)
    # Assert
    assert 2 < expected == refused_at
    with PrivacyLedger(path) as ledger:
        entries = ledger.entries("wards")
        assert [e.round for e in entries] == list(range(1, expected))
        assert entries[-1].epsilon_total <= 3.0
        assert ledger.spent("wards") == pytest.approx(entries[-1].epsilon_total)
        assert sum(e.epsilon_spent for e in entries) == pytest.approx(entries[-1].epsilon_total)
        assert ledger.verify() == 1 + len(entries) + 1  # cap, charges, one refusal


def test_refusal_names_the_reason_and_writes_no_entry(tmp_path: Path) -> None:
    with PrivacyLedger(tmp_path / "o.db") as ledger:
        ledger.set_cap("labs", epsilon=0.5, delta=DELTA)
        with pytest.raises(BudgetExceeded, match=r"job 'j' round 7 .* above the cap 0.5") as info:
            ledger.charge(job="j", round=7, dataset="labs", mechanism="dpsgd", event=ROUND)
        assert "labs" in info.value.reason
        with pytest.raises(BudgetExceeded, match="no privacy cap"):
            ledger.charge(job="j", round=1, dataset="unknown", mechanism="dpsgd", event=ROUND)
        assert ledger.entries() == []
        rows = (
            sqlite3.connect(tmp_path / "o.db")
            .execute("SELECT kind FROM audit ORDER BY id")
            .fetchall()
        )
        assert [r[0] for r in rows] == ["cap", "refusal", "refusal"]


def test_heterogeneous_events_compose_through_accounting(tmp_path: Path) -> None:
    dpsgd = GaussianEvent(noise_multiplier=1.1, sample_rate=0.01, steps=100)
    with PrivacyLedger(tmp_path / "o.db") as ledger:
        ledger.set_cap("ds", epsilon=20.0, delta=DELTA)
        ledger.charge(job="a", round=1, dataset="ds", mechanism="dpsgd", event=dpsgd)
        preview = ledger.preview(dataset="ds", event=ROUND)
        assert len(ledger.entries()) == 1  # preview writes nothing
        entry = ledger.charge(
            job="a", round=2, dataset="ds", mechanism="dp-fedavg-skellam", event=ROUND
        )
        assert entry.epsilon_total == pytest.approx(preview)
        assert entry.epsilon_total == pytest.approx(compose([dpsgd, ROUND], delta=DELTA).epsilon)
        assert ledger.events("ds") == [dpsgd, ROUND]


def test_charges_that_returned_survive_sigkill(tmp_path: Path) -> None:
    # Prepare: a client process that charges in a loop and reports each charge that returned
    # (the moment it would send), then is killed at an arbitrary point.
    path = tmp_path / "owner.db"
    with PrivacyLedger(path) as ledger:
        ledger.set_cap("ds", epsilon=1e6, delta=DELTA)
    child = textwrap.dedent(
        f"""
        import sys
        from fl_core.client.ledger import PrivacyLedger
        from fl_core.dp.accounting import SkellamEvent
        ledger = PrivacyLedger({str(path)!r})
        event = SkellamEvent(mu=2000.0, l1_sensitivity=40.0, l2_sensitivity=20.0)
        for r in range(1, 10_000):
            entry = ledger.charge(job="j", round=r, dataset="ds", mechanism="m", event=event)
            print(entry.id, flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.stdout is not None
    # Execute
    sent = [int(proc.stdout.readline()) for _ in range(15)]
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()
    # Assert: everything reported as sent is in the ledger, and the ledger still verifies
    with PrivacyLedger(path) as ledger:
        ledger.verify()
        ids = {e.id for e in ledger.entries("ds")}
    assert set(sent) <= ids
    assert ids == set(range(1, max(ids) + 1))


def test_two_processes_cannot_both_spend_the_last_budget(tmp_path: Path) -> None:
    # Prepare: room for exactly one more round
    path = tmp_path / "owner.db"
    with PrivacyLedger(path) as ledger:
        cap = compose([ROUND], delta=DELTA).epsilon * 1.01
        ledger.set_cap("ds", epsilon=cap, delta=DELTA)
    child = textwrap.dedent(
        f"""
        from fl_core.client.ledger import PrivacyLedger
        from fl_core.dp.accounting import SkellamEvent
        from fl_core.errors import BudgetExceeded
        ledger = PrivacyLedger({str(path)!r})
        try:
            ledger.charge(job="j", round=1, dataset="ds", mechanism="m",
                          event=SkellamEvent(mu=2000.0, l1_sensitivity=40.0, l2_sensitivity=20.0))
            print("charged")
        except BudgetExceeded:
            print("refused")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Execute
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
        )
        for _ in range(2)
    ]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    # Assert
    assert outcomes == ["charged", "refused"]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE entries SET epsilon_spent = 0 WHERE id = 1", "entry 1 differs"),
        ("DELETE FROM entries WHERE id = 2", "entries but"),
        ("DELETE FROM audit WHERE id = 2", "missing"),
        (
            "UPDATE audit SET payload = replace(payload, 'job-x', 'job-y') WHERE id = 2",
            "hash chain",
        ),
        ("UPDATE caps SET epsilon = 100", "cap of data set"),
        ("DELETE FROM caps", "caps but"),
    ],
)
def test_tampering_is_detected_and_charging_fails_closed(
    tmp_path: Path, sql: str, message: str
) -> None:
    # Prepare
    path = tmp_path / "o.db"
    with PrivacyLedger(path) as ledger:
        ledger.set_cap("ds", epsilon=50.0, delta=DELTA)
        for r in (1, 2):
            ledger.charge(job="job-x", round=r, dataset="ds", mechanism="m", event=ROUND)
        ledger.verify()
    # Execute: someone edits the file behind the ledger's back
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()
    # Assert
    with PrivacyLedger(path) as ledger:
        with pytest.raises(LedgerTampered, match=message):
            ledger.verify()
        with pytest.raises(LedgerTampered):
            ledger.charge(job="job-x", round=3, dataset="ds", mechanism="m", event=ROUND)


def test_show_and_render(tmp_path: Path) -> None:
    with PrivacyLedger(tmp_path / "o.db") as ledger:
        ledger.set_cap("wards", epsilon=8.0, delta=DELTA)
        ledger.set_cap("labs", epsilon=2.0, delta=1e-6)
        ledger.charge(job="mnist-fl", round=1, dataset="wards", mechanism="dpsgd", event=ROUND)
        count_before, head_before = ledger.head()
        ledger.charge(job="mnist-fl", round=2, dataset="wards", mechanism="dpsgd", event=ROUND)
        view = ledger.show()
        text = render_budget(view)
    # Assert
    assert ledger_head_changed(head_before, view.head_hash, count_before, view.audit_rows)
    wards = next(b for b in view.datasets if b.dataset == "wards")
    labs = next(b for b in view.datasets if b.dataset == "labs")
    assert len(wards.entries) == 2 and labs.entries == ()
    assert wards.remaining == pytest.approx(8.0 - wards.spent)
    assert labs.spent == 0.0 and labs.remaining == 2.0
    for needle in ("wards", "labs", "mnist-fl", "dpsgd", f"{wards.spent:.4f}", "remaining"):
        assert needle in text
    with PrivacyLedger(tmp_path / "empty.db") as empty:
        assert render_budget(empty.show()).endswith("no data sets")


def ledger_head_changed(before: str, after: str, count_before: int, count_after: int) -> bool:
    return before != after and count_after == count_before + 1


def test_file_is_private_and_arguments_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with PrivacyLedger(path) as ledger:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        for kwargs, message in (
            ({"epsilon": -1.0, "delta": DELTA}, "epsilon"),
            ({"epsilon": 1.0, "delta": 0.0}, "delta"),
        ):
            with pytest.raises(ConfigError, match=message):
                ledger.set_cap("ds", **kwargs)  # type: ignore[arg-type]
        ledger.set_cap("ds", epsilon=1.0, delta=DELTA)
        with pytest.raises(ConfigError, match="round"):
            ledger.charge(job="j", round=-1, dataset="ds", mechanism="m", event=ROUND)
        with pytest.raises(ConfigError, match="job"):
            ledger.charge(job="", round=1, dataset="ds", mechanism="m", event=ROUND)


def test_schema_version_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    PrivacyLedger(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        PrivacyLedger(path)
