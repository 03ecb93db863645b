"""``bulwark simulate`` keeps an audit log per party and writes the report of the run.

``bulwark audit verify`` / ``export`` on those logs, and ``bulwark report`` (HTML and JSON twin)
checked against the run's metrics.json, ledgers and audit logs.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fl_core.audit import verify_audit
from tests.e2e.test_cli import ROOT, bulwark

pytestmark = pytest.mark.integration

DP_CENTRAL = ROOT / "examples" / "breast_cancer" / "dp_central.toml"
HE_STATISTICS = ROOT / "examples" / "he_statistics" / "job.toml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audit-run")
    job = folder / "job.toml"
    job.write_text(DP_CENTRAL.read_text().replace("rounds = 10", "rounds = 2"))
    done = bulwark("simulate", str(job), "--output", str(folder / "run"), "--quiet")
    assert done.returncode == 0, done.stderr
    return folder / "run"


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stats-run") / "run"
    done = bulwark("stats", str(HE_STATISTICS), "--output", str(folder), "--quiet")
    assert done.returncode == 0, done.stderr
    return folder


def _export(log: Path) -> list[dict[str, object]]:
    done = bulwark("audit", "export", str(log))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_every_party_keeps_a_log_that_verifies(run_dir: Path) -> None:
    logs = sorted((run_dir / "audit").glob("*.db"))
    assert [p.stem for p in logs] == [*(f"client-{i}" for i in range(5)), "coordinator"]
    for log in logs[::5]:  # the CLI on an owner's and the coordinator's
        done = bulwark("audit", "verify", str(log))
        assert done.returncode == 0, done.stderr
        assert "entries verified" in done.stdout
    for log in logs:
        assert verify_audit(log).entries > 0


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


# --- the report ----------------------------------------------------------------------------------


def _points(html: str, chart: str) -> dict[str, list[tuple[float, float]]]:
    """The plotted points of the chart titled ``chart``, by series name, from the inline SVG."""
    svg = re.search(rf"<svg[^>]*><title>{re.escape(chart)}</title>(.*?)</svg>", html, re.S)
    assert svg is not None, f"no chart {chart!r}"
    out: dict[str, list[tuple[float, float]]] = {}
    for name, body in re.findall(r'<g class="series" data-name="([^"]*)">(.*?)</g>', svg.group(1)):
        out[name] = [
            (float(x), float(y)) for x, y in re.findall(r'data-x="([^"]*)" data-y="([^"]*)"', body)
        ]
    return out


def test_simulate_writes_a_self_contained_report_with_its_json_twin(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text()
    facts = json.loads((run_dir / "report.json").read_text())
    # self-contained: nothing is fetched
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "<script" not in html and "<link" not in html and "<img" not in html
    # the JSON twin
    assert set(facts) >= {
        "job", "parties", "protections", "threat_model", "epsilon", "refusals", "utility",
        "audit", "ledgers", "obligations", "withdrawn_records",
    }  # fmt: skip
    assert facts["job"]["purpose"] == "diagnostic-model-research"
    assert facts["job"]["status"] == "completed" and facts["job"]["rounds_completed"] == 2
    roles = {p["name"]: p["role"] for p in facts["parties"]}
    assert roles["coordinator"] == "coordinator" and roles["client-4"] == "owner"
    assert any(p["name"].startswith("differential privacy") for p in facts["protections"])
    assert all(a["verified"] for a in facts["audit"]) and len(facts["audit"]) == 6
    assert "not legal advice" in facts["obligations"]["disclaimer"]
    rows = {o["key"]: o for o in facts["obligations"]["rows"]}
    assert rows["dp"]["in_force"] and not rows["secagg"]["in_force"]
    assert "Art. 35" in rows["report"]["gdpr"] and "Art. 55" in rows["report"]["pipl"]


def test_the_report_figures_are_the_runs_own_numbers(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text()
    facts = json.loads((run_dir / "report.json").read_text())
    rounds = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    with sqlite3.connect(run_dir / "ledgers" / "client-2.db") as db:
        ledger = [r[0] for r in db.execute("SELECT epsilon_total FROM entries ORDER BY id")]
    plotted = _points(html, "epsilon over rounds")
    assert [y for _, y in plotted["client-2"]] == pytest.approx(ledger)
    assert [y for _, y in plotted["job guarantee"]] == pytest.approx([r["epsilon"] for r in rounds])
    assert [p["epsilon"] for p in facts["epsilon"]["owners"]["client-2"]] == pytest.approx(ledger)
    accuracy = _points(html, "accuracy over rounds")["accuracy"]
    assert accuracy == [(r["round"], pytest.approx(r["accuracy"])) for r in rounds]
    assert [u["loss"] for u in facts["utility"]] == pytest.approx([r["loss"] for r in rounds])


def test_a_tampered_audit_log_shows_as_failed_in_the_report(run_dir: Path, tmp_path: Path) -> None:
    # Prepare: a copy of the run with one coordinator entry deleted
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    db = sqlite3.connect(copy / "audit" / "coordinator.db")
    with db:
        db.execute("DELETE FROM audit WHERE seq = 3")
    db.close()
    # Execute
    done = bulwark("report", str(copy))
    # Assert
    assert done.returncode == 0, done.stderr
    facts = json.loads((copy / "report.json").read_text())
    audit = {a["party"]: a for a in facts["audit"]}
    assert audit["coordinator"]["verified"] is False
    assert "entry 3 is missing" in audit["coordinator"]["error"]
    assert all(a["verified"] for name, a in audit.items() if name != "coordinator")
    html = (copy / "report.html").read_text()
    assert "An audit chain FAILED verification." in html and "entry 3 is missing" in html


def test_a_refusal_is_in_the_report_with_its_reason(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(DP_CENTRAL.read_text().replace("rounds = 10", "rounds = 1"))
    policy = tmp_path / "policy.toml"
    policy.write_text("[policy]\nmax_round_epsilon = 0.05\n")
    out = tmp_path / "run"
    done = bulwark(
        "simulate", str(job), "--output", str(out), "--owner-policy", str(policy), "--quiet"
    )
    assert done.returncode == 2 and "policy.max_round_epsilon" in done.stderr
    facts = json.loads((out / "report.json").read_text())
    assert facts["job"]["status"] == "failed"
    owners = [r for r in facts["refusals"] if r["role"] == "owner"]
    seen = [r for r in facts["refusals"] if r["role"] == "coordinator" and r["kind"] == "refusal"]
    assert {r["party"] for r in owners} == {f"client-{i}" for i in range(5)}
    assert {r["peer"] for r in seen} == {f"client-{i}" for i in range(5)}
    assert all("policy.max_round_epsilon" in r["reason"] for r in owners + seen)
    assert "policy.max_round_epsilon" in (out / "report.html").read_text()


def test_the_he_statistics_job_report_names_its_release_and_every_party(stats_dir: Path) -> None:
    facts = json.loads((stats_dir / "report.json").read_text())
    result = json.loads((stats_dir / "statistics.json").read_text())["statistics"]
    assert facts["job"]["kind"] == "stats" and facts["job"]["status"] == "completed"
    released = facts["statistics_released"]
    assert released["count"] == result["count"] == 442
    assert sorted(released["contributors"]) == sorted(result["contributors"])
    audit = {a["party"]: a for a in facts["audit"]}
    assert set(audit) == {*(f"client-{i}" for i in range(5)), "coordinator", "keyholder"}
    assert all(a["verified"] for a in audit.values())
    assert any(p["name"].startswith("homomorphic encryption") for p in facts["protections"])
    decryptions = [
        e for e in _export(stats_dir / "audit" / "keyholder.db") if e["kind"] == "decryption"
    ]
    assert len(decryptions) == 1
    assert sorted(decryptions[0]["detail"]["contributors"]) == sorted(result["contributors"])  # type: ignore[index]


def test_a_folder_without_a_run_is_one_line(tmp_path: Path) -> None:
    done = bulwark("report", str(tmp_path))
    assert done.returncode == 2 and "metrics.json" in done.stderr
    assert "Traceback" not in done.stderr


# --- the report in a real browser: Debian's headless chromium -------------------------------------

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup installs it)"
)
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
)  # fmt: skip


def _chromium(page: Path, folder: Path, *action: str) -> tuple[str, str, list[tuple[str, str]]]:
    """Open ``page`` in a fresh profile; return stdout, stderr and the page's own requests.

    The requests come from Chromium's NetLog: every URL request the page started (the browser's
    own background requests carry no initiator origin and are left out).
    """
    folder.mkdir(parents=True, exist_ok=True)
    netlog = folder / "net.json"
    done = subprocess.run(
        [
            str(CHROMIUM),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={folder / 'profile'}",
            f"--log-net-log={netlog}",
            *action,
            page.resolve().as_uri(),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    requests = [
        (str(e["params"].get("initiator")), str(e["params"]["url"]))
        for e in log["events"]
        if names.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in e.get("params", {})
    ]
    return done.stdout, done.stderr, [r for r in requests if r[0] != "not an origin"]


@needs_chromium
def test_the_network_check_sees_a_page_that_fetches(tmp_path: Path) -> None:
    # the control: without it, "no requests" below could mean the check sees nothing
    page = tmp_path / "fetches.html"
    page.write_text('<html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    _, _, requests = _chromium(page, tmp_path / "chromium", "--dump-dom")
    assert [url for _, url in requests] == ["http://127.0.0.1:9/x.png"]


@needs_chromium
def test_the_report_renders_offline_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    # Execute: the page's DOM as rendered, and a screenshot
    dom, stderr, requests = _chromium(run_dir / "report.html", tmp_path / "dom", "--dump-dom")
    shot = tmp_path / "report.png"
    _, shot_err, shot_requests = _chromium(
        run_dir / "report.html",
        tmp_path / "shot",
        "--window-size=1000,3200",
        f"--screenshot={shot}",
    )
    # Assert: no network request, no console message, and the figures are the run's
    assert requests == [] and shot_requests == []
    assert ":CONSOLE" not in stderr and ":CONSOLE" not in shot_err
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert "Data protection report: job breast-cancer-dp-central" in dom
    assert "Every audit chain verified." in dom
    rounds = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    assert _points(dom, "accuracy over rounds")["accuracy"] == [
        (r["round"], pytest.approx(r["accuracy"])) for r in rounds
    ]
    for i in range(5):
        plotted = [y for _, y in _points(dom, "epsilon over rounds")[f"client-{i}"]]
        assert plotted == pytest.approx([r["owner_epsilon"][f"client-{i}"] for r in rounds])


@needs_chromium
def test_the_statistics_report_renders_offline_in_headless_chromium(
    stats_dir: Path, tmp_path: Path
) -> None:
    dom, stderr, requests = _chromium(stats_dir / "report.html", tmp_path / "dom", "--dump-dom")
    shot = tmp_path / "stats.png"
    _, shot_err, shot_requests = _chromium(
        stats_dir / "report.html", tmp_path / "shot", f"--screenshot={shot}"
    )
    assert requests == [] and shot_requests == []
    assert ":CONSOLE" not in stderr and ":CONSOLE" not in shot_err
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    count = json.loads((stats_dir / "statistics.json").read_text())["statistics"]["count"]
    assert "Statistics released" in dom and f"<td>{count}</td>" in dom
    assert "Every audit chain verified." in dom


def test_a_deployed_coordinator_writes_the_report_and_owners_keep_their_logs(
    tmp_path: Path,
) -> None:
    # Prepare: a two-owner job served by `bulwark coordinator`, owners as `bulwark client`
    job = tmp_path / "job.toml"
    job.write_text(
        (ROOT / "examples" / "breast_cancer" / "job.toml")
        .read_text()
        .replace("rounds = 10", "rounds = 1")
        .replace("num_clients = 5", "num_clients = 2")
        .replace("min_clients = 5", "min_clients = 2")
    )
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, state = tmp_path / "out", tmp_path / "state.db"
    coordinator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fl_core.cli",
            "coordinator",
            str(job),
            "--state",
            str(state),
            "--address",
            f"127.0.0.1:{port}",
            "--output",
            str(out),
            "--quiet",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    owners = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fl_core.cli",
                "client",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--job",
                str(job),
                "--partition",
                str(i),
                "--quiet",
                "--audit",
                str(tmp_path / f"owner-{i}.db"),
                "--coordinator-name",
                "coordinator",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    # Execute
    try:
        _, err = coordinator.communicate(timeout=240)
        for owner in owners:
            owner.communicate(timeout=60)
    finally:
        for proc in (coordinator, *owners):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # Assert: the coordinator's own report reads its log beside the state file
    assert coordinator.returncode == 0, err
    facts = json.loads((out / "report.json").read_text())
    assert [(a["party"], a["verified"]) for a in facts["audit"]] == [("coordinator", True)]
    assert facts["audit"][0]["path"] == str(tmp_path / "state-audit.db")
    # and a privacy officer adds the owners' logs
    logs = [tmp_path / "owner-0.db", tmp_path / "owner-1.db"]
    done = bulwark(
        "report", str(out), "--job", str(job), "--audit", str(tmp_path / "state-audit.db"),
        *(a for log in logs for a in ("--audit", str(log))),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    facts = json.loads((out / "report.json").read_text())
    assert {a["party"] for a in facts["audit"]} == {"coordinator", "client-0", "client-1"}
    assert all(a["verified"] for a in facts["audit"])
    releases = [e for e in _export(logs[0]) if e["kind"] == "release"]
    assert [e["stage"] for e in releases] == ["fit", "evaluate"]
