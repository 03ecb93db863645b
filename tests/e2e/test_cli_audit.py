"""``bulwark simulate`` keeps an audit log per party; ``bulwark audit verify`` and ``export``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.test_cli import ROOT, bulwark

pytestmark = pytest.mark.integration

DP_CENTRAL = ROOT / "examples" / "breast_cancer" / "dp_central.toml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audit-run")
    job = folder / "job.toml"
    job.write_text(DP_CENTRAL.read_text().replace("rounds = 10", "rounds = 2"))
    done = bulwark("simulate", str(job), "--output", str(folder / "run"), "--quiet")
    assert done.returncode == 0, done.stderr
    return folder / "run"


def _export(log: Path) -> list[dict[str, object]]:
    done = bulwark("audit", "export", str(log))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_every_party_keeps_a_log_that_verifies(run_dir: Path) -> None:
    logs = sorted((run_dir / "audit").glob("*.db"))
    assert [p.stem for p in logs] == [*(f"client-{i}" for i in range(5)), "coordinator"]
    for log in logs:
        done = bulwark("audit", "verify", str(log))
        assert done.returncode == 0, done.stderr
        assert "entries verified" in done.stdout


def test_the_owner_log_says_what_it_released_and_the_epsilon_its_ledger_charged(
    run_dir: Path,
) -> None:
    entries = _export(run_dir / "audit" / "client-0.db")
    releases = [e for e in entries if e["kind"] == "release"]
    assert [e["round"] for e in releases] == [1, 2]
    assert all(e["peer"] == "coordinator" and e["direction"] == "sent" for e in releases)
    assert all("dp:central" in e["protections"] for e in releases)  # type: ignore[operator]
    manifest = {e["manifest"] for e in entries}
    assert len(manifest) == 1 and len(str(manifest.pop())) == 64
    with sqlite3.connect(run_dir / "ledgers" / "client-0.db") as db:
        totals = [r[0] for r in db.execute("SELECT epsilon_total FROM entries ORDER BY id")]
    assert [e["epsilon"] for e in releases] == pytest.approx(totals)
    rounds = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    assert [r["owner_epsilon"]["client-0"] for r in rounds] == pytest.approx(totals)
    # what the release held is named, never its values
    assert "update" in releases[0]["detail"]["fields"]  # type: ignore[index,operator]
    assert all(not isinstance(v, dict) for e in entries for v in e["detail"].values())  # type: ignore[attr-defined]


def test_the_coordinator_log_has_each_round(run_dir: Path) -> None:
    entries = _export(run_dir / "audit" / "coordinator.db")
    kinds = [e["kind"] for e in entries]
    assert kinds.count("round_committed") == 2 and kinds[-1] == "job_done"
    committed = [e for e in entries if e["kind"] == "round_committed"]
    assert committed[0]["detail"]["contributors"] == [f"client-{i}" for i in range(5)]  # type: ignore[index]
    assert committed[-1]["epsilon"] > committed[0]["epsilon"]  # type: ignore[operator]


def test_a_tampered_log_fails_in_one_line_naming_the_entry(run_dir: Path, tmp_path: Path) -> None:
    # Prepare: a copy of an owner's log with one entry's epsilon lowered
    log = tmp_path / "client-1.db"
    log.write_bytes((run_dir / "audit" / "client-1.db").read_bytes())
    db = sqlite3.connect(log)
    with db:
        seq, body = db.execute(
            "SELECT seq, body FROM audit WHERE body LIKE '%\"release\"%'"
        ).fetchone()
        raw = json.loads(body)
        raw["epsilon"] = 0.01
        db.execute(
            "UPDATE audit SET body=? WHERE seq=?",
            (json.dumps(raw, sort_keys=True, separators=(",", ":")), seq),
        )
    db.close()
    # Execute
    done = bulwark("audit", "verify", str(log))
    # Assert
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and f"entry {seq} does not match its hash: edited" in lines[0]


def test_a_missing_log_is_one_line(tmp_path: Path) -> None:
    done = bulwark("audit", "verify", str(tmp_path / "nope.db"))
    assert done.returncode == 2 and "no audit log" in done.stderr
    assert "Traceback" not in done.stderr


def test_export_to_a_file(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    done = bulwark(
        "audit", "export", str(run_dir / "audit" / "coordinator.db"), "--output", str(out)
    )
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
