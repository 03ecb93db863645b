"""End-to-end tests of the HE commands: bulwark stats, stats-coordinator, stats-owner, keyholder."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from support_he import COLUMNS, assert_matches_pooled, pooled, stats_job, stats_job_text

from fl_core.he_job import raw_public_key
from fl_core.stats import dataset_tables

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "he_statistics" / "job.toml"


def command(*args: str) -> list[str]:
    exe = shutil.which("bulwark", path=str(Path(sys.executable).parent))
    return [*([exe] if exe else [sys.executable, "-m", "fl_core.cli"]), *args]


def bulwark(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        command(*args), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def test_stats_over_grpc_processes_equals_numpy_on_the_pooled_rows(tmp_path: Path) -> None:
    out = tmp_path / "out"

    done = bulwark("stats", str(EXAMPLE), "--transport", "grpc", "--output", str(out), "--quiet")

    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout and "5 contributors, 442 rows" in done.stdout
    summary = json.loads((out / "statistics.json").read_text())
    assert summary["status"] == "completed" and summary["transport"] == "grpc"
    assert summary["round"]["num_clients"] == 5
    from fl_core.config import load_job

    assert_matches_pooled(summary["statistics"], pooled(dataset_tables(load_job(EXAMPLE))))


def _pem(path: Path) -> bytes:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return raw_public_key(key)


def test_a_deployment_coordinator_key_holder_and_owners_with_their_own_files(
    tmp_path: Path,
) -> None:
    # Prepare: a job for three owners, each with its table (CSV) and identity; the key holder
    # gets the owners' public keys in its enrolment file, the owners trust its key.
    job_file = tmp_path / "job.toml"
    job_file.write_text(stats_job_text(name="deployed", owners=3, min_clients=3, k=3))
    tables = dataset_tables(stats_job(owners=3))
    enrolment = []
    for i, table in enumerate(tables):
        csv = tmp_path / f"h{i}.csv"
        np.savetxt(csv, np.column_stack([table[c] for c in COLUMNS]), delimiter=",",
                   header=",".join(COLUMNS), comments="")  # fmt: skip
        enrolment.append(f'h{i} = "{_pem(tmp_path / f"h{i}.pem").hex()}"')
    (tmp_path / "enrolment.toml").write_text("\n".join(enrolment) + "\n")
    printed = bulwark("public-key", "--create", str(tmp_path / "kh.pem"))  # mode 0600
    assert printed.returncode == 0, printed.stderr
    assert stat.S_IMODE((tmp_path / "kh.pem").stat().st_mode) == 0o600
    keyholder_key = printed.stdout.strip()
    assert len(keyholder_key) == 64
    (tmp_path / "policy.toml").write_text(f'[policy]\ntrusted_keyholders = ["{keyholder_key}"]\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    common = ["--coordinator", address, "--job", str(job_file), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as fh:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(command(*args), stdout=subprocess.DEVNULL, stderr=fh, env=env)

    # Execute
    coordinator = spawn(
        "coordinator", "stats-coordinator", str(job_file), "--address", address, "--quiet",
        "--state", str(tmp_path / "s.db"), "--output", str(tmp_path / "out"),
    )  # fmt: skip
    others = [
        spawn("keyholder", "keyholder", *common, "--enrolment", str(tmp_path / "enrolment.toml"),
              "--identity", str(tmp_path / "kh.pem")),
        *(
            spawn(f"h{i}", "stats-owner", *common, "--name", f"h{i}", "--data",
                  str(tmp_path / f"h{i}.csv"), "--identity", str(tmp_path / f"h{i}.pem"),
                  "--policy", str(tmp_path / "policy.toml"))
            for i in range(3)
        ),
    ]  # fmt: skip
    try:
        code = coordinator.wait(timeout=240)
        codes = [p.wait(timeout=60) for p in others]
    finally:
        for p in [coordinator, *others]:
            p.kill()
            p.wait()

    # Assert
    assert code == 0, (tmp_path / "coordinator.log").read_text()
    assert codes == [0, 0, 0, 0]
    summary = json.loads((tmp_path / "out" / "statistics.json").read_text())
    assert sorted(summary["statistics"]["contributors"]) == ["h0", "h1", "h2"]
    assert_matches_pooled(summary["statistics"], pooled(tables))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("stats", "JOB_BAD_CLIP"), "stats: clip.age must be finite numbers"),
        (("stats", "JOB", "--transport", "carrier-pigeon"), "'carrier-pigeon' is not one of"),
        (
            ("keyholder", "--coordinator", "127.0.0.1:1", "--job", "JOB", "--enrolment", "BAD"),
            "is not a 32-byte Ed25519 public key",
        ),
        (
            ("keyholder", "--coordinator", "127.0.0.1:1", "--job", "TRAIN", "--enrolment", "GOOD"),
            "this job needs no key holder",
        ),
        (
            ("stats-owner", "--coordinator", "10.1.2.3:5", "--job", "JOB", "--partition", "0"),
            "is not a loopback address: give --tls-ca",
        ),
        (("stats-owner", "--coordinator", "127.0.0.1:1", "--job", "JOB"), "exactly one of"),
    ],
    ids=["bad-spec", "transport", "enrolment", "no-he", "tls", "no-data"],
)
def test_errors_are_one_line_with_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    files = {
        "JOB": stats_job_text(),
        "JOB_BAD_CLIP": stats_job_text().replace("age = [0, 120]", "age = [120, 0]"),
        "TRAIN": (ROOT / "examples" / "breast_cancer" / "job.toml").read_text(),
        "BAD": 'a = "00"\nb = "11"\n',
        "GOOD": "".join(f'o{i} = "{_pem(tmp_path / f"o{i}.pem").hex()}"\n' for i in range(2)),
    }
    paths = {}
    for name, text in files.items():
        paths[name] = tmp_path / f"{name}.toml"
        paths[name].write_text(text)

    done = bulwark(*(str(paths[a]) if a in paths else a for a in args), timeout=60)

    assert done.returncode == 2, done.stdout + done.stderr
    assert message in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
