"""``bulwark federation`` and a roster-bound deployment over loopback gRPC, as processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

JOB = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer" / "job.toml"


def bulwark(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        _cli(*args), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _short_job(tmp_path: Path, rounds: int) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(JOB.read_text().replace("rounds = 10", f"rounds = {rounds}"))
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fl_core.cli", *args]


def _federation(tmp_path: Path, owners: list[str]) -> Path:
    fed = tmp_path / "fed"
    done = bulwark("federation", "init", "--out", str(fed), "--name", "clinics")
    assert done.returncode == 0, done.stderr
    for name in [*owners, "coordinator"]:
        key = tmp_path / f"{name}.pem"
        pub = bulwark("public-key", str(key))
        assert pub.returncode == 0, pub.stderr
        role = "coordinator" if name == "coordinator" else "owner"
        added = bulwark(
            "federation", "add", name, "--role", role, "--key", pub.stdout.strip(),
            "--authority", str(fed),
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
    return fed


def test_init_add_show_verify_and_tamper(tmp_path: Path) -> None:
    fed = _federation(tmp_path, ["hospital-a", "hospital-b"])
    roster, pub = fed / "roster.json", fed / "authority.pub.pem"
    assert (fed / "authority.pem").stat().st_mode & 0o777 == 0o600
    shown = bulwark("federation", "show", str(roster), "--authority", str(pub))
    assert shown.returncode == 0, shown.stderr
    assert "3 members" in shown.stdout and "hospital-b" in shown.stdout
    assert bulwark("federation", "verify", str(roster), "--authority", str(pub)).returncode == 0
    again = bulwark(
        "federation", "add", "hospital-a", "--role", "keyholder", "--key", "ab" * 32,
        "--authority", str(fed),
    )  # fmt: skip
    assert again.returncode == 2 and "--replace" in again.stderr
    # An edit by anyone without the authority key: the member becomes the key holder.
    doc = json.loads(roster.read_text())
    doc["roster"]["members"][0]["role"] = "keyholder"
    roster.write_text(json.dumps(doc))
    bad = bulwark("federation", "verify", str(roster), "--authority", str(pub))
    assert bad.returncode == 2
    assert "does not verify" in bad.stderr and "Traceback" not in bad.stderr
    half = bulwark("client", "--coordinator", "127.0.0.1:1", "--job", str(tmp_path / "j.toml"),
                   "--partition", "0", "--federation", str(roster))  # fmt: skip
    assert half.returncode == 2


def test_a_roster_bound_deployment_admits_members_only(tmp_path: Path) -> None:
    owners = [f"client-{i}" for i in range(5)]
    fed = _federation(tmp_path, owners)
    roster, pub = str(fed / "roster.json"), str(fed / "authority.pub.pem")
    job = _short_job(tmp_path, rounds=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    coordinator = subprocess.Popen(
        _cli("coordinator", str(job), "--state", str(tmp_path / "s.db"), "--address", address,
             "--federation", roster, "--authority", pub,
             "--identity", str(tmp_path / "coordinator.pem"), "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    member_args = ["--federation", roster, "--authority", pub, "--quiet", "--threads", "1"]
    try:
        # An outsider with its own key, and one that claims a member's name with another key.
        for name in ["intruder", "client-0"]:
            refused = bulwark(
                "client", "--coordinator", address, "--job", str(job), "--partition", "0",
                "--name", name, "--identity", str(tmp_path / f"{name}-own.pem"),
                "--connect-timeout", "20", "--quiet",
            )  # fmt: skip
            assert refused.returncode == 2, refused.stderr
            assert "roster" in refused.stderr and "Traceback" not in refused.stderr
        clients = [
            subprocess.Popen(
                _cli(
                    "client",
                    "--coordinator",
                    address,
                    "--job",
                    str(job),
                    "--partition",
                    str(i),
                    "--name",
                    name,
                    "--identity",
                    str(tmp_path / f"{name}.pem"),
                    *member_args,
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for i, name in enumerate(owners)
        ]
        _, err = coordinator.communicate(timeout=240)
        assert coordinator.returncode == 0, err
        for c in clients:
            _, cerr = c.communicate(timeout=60)
            assert c.returncode == 0, cerr
    finally:
        coordinator.kill()
