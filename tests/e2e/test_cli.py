"""End-to-end tests of the ``bulwark`` command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BREAST_CANCER = ROOT / "examples" / "breast_cancer" / "job.toml"


def bulwark(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("bulwark", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "fl_core.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _short_job(tmp_path: Path, rounds: int) -> Path:
    text = BREAST_CANCER.read_text().replace("rounds = 10", f"rounds = {rounds}")
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_simulate_breast_cancer_reaches_95_percent(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = bulwark("simulate", str(BREAST_CANCER), "--output", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert [r["round"] for r in metrics["rounds"]] == list(range(1, 11))
    last = metrics["rounds"][-1]
    assert last["accuracy"] >= 0.95
    assert last["num_clients"] == 5 and last["bytes_up"] > 0 and last["seconds"] > 0
    weights = load_file(str(out / "model.safetensors"))  # safetensors: no pickle on disk
    assert set(weights) == {"linear.weight", "linear.bias"}

    again = bulwark("simulate", str(BREAST_CANCER), "--output", str(out), "--quiet")
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout and "after round 10" in again.stdout
    assert json.loads((out / "metrics.json").read_text())["rounds"] == metrics["rounds"]


def test_simulate_over_grpc_processes_matches_in_memory(tmp_path: Path) -> None:
    job = _short_job(tmp_path, rounds=2)
    grpc_run = bulwark(
        "simulate", str(job), "--transport", "grpc", "--output", str(tmp_path / "grpc"), "--quiet"
    )
    assert grpc_run.returncode == 0, grpc_run.stderr
    mem_run = bulwark("simulate", str(job), "--output", str(tmp_path / "mem"), "--quiet")
    assert mem_run.returncode == 0, mem_run.stderr
    a = load_file(str(tmp_path / "grpc" / "model.safetensors"))
    b = load_file(str(tmp_path / "mem" / "model.safetensors"))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    grpc_file = (tmp_path / "grpc" / "model.safetensors").read_bytes()
    assert grpc_file == (tmp_path / "mem" / "model.safetensors").read_bytes()  # the same file
    rounds = json.loads((tmp_path / "grpc" / "metrics.json").read_text())["rounds"]
    assert [r["num_clients"] for r in rounds] == [5, 5]


def test_a_wrong_job_field_is_named_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BREAST_CANCER.read_text().replace('name = "fedavg"', 'name = "fedmagic"'))
    done = bulwark("simulate", str(bad))
    assert done.returncode == 2
    assert "strategy.name = 'fedmagic' is not allowed" in done.stderr
    assert "Traceback" not in done.stderr


def test_error_text_is_printed_as_plain_text_not_markup(tmp_path: Path) -> None:
    job = tmp_path / "bad.toml"
    job.write_text(BREAST_CANCER.read_text() + "\n[trian]\nepochs = 1\n")

    done = bulwark("simulate", str(job), "--quiet")

    assert done.returncode == 2
    assert "[trian] is not a known table" in done.stderr
    assert "Traceback" not in done.stderr


def test_version_and_transport_choices() -> None:
    version = bulwark("--version")
    bad = bulwark("simulate", str(BREAST_CANCER), "--transport", "carrier-pigeon")

    assert version.returncode == 0 and version.stdout.startswith("bulwark ")
    assert bad.returncode == 2
    assert "'carrier-pigeon' is not one of 'inmemory', 'grpc'" in " ".join(bad.stderr.split())


def test_missing_data_set_files_are_explained(tmp_path: Path) -> None:
    job = tmp_path / "fmnist.toml"
    job.write_text(
        '[job]\nname = "f"\n[data]\ndataset = "fashion_mnist"\npath = "'
        + str(tmp_path / "nowhere")
        + '"\n[model]\nname = "cnn"\n'
    )
    done = bulwark("simulate", str(job), "--quiet")
    assert done.returncode == 2
    assert "dataset-fashion-mnist" in done.stderr
    assert "Traceback" not in done.stderr


def test_coordinator_refuses_plaintext_on_a_public_address(tmp_path: Path) -> None:
    done = bulwark(
        "coordinator",
        str(BREAST_CANCER),
        "--address",
        "0.0.0.0:50999",
        "--state",
        str(tmp_path / "s.db"),
    )
    assert done.returncode == 2
    assert "not a loopback address" in done.stderr


def test_client_with_a_different_job_file_is_refused(tmp_path: Path) -> None:
    job = _short_job(tmp_path, rounds=1)
    other = tmp_path / "other.toml"
    other.write_text(job.read_text().replace("learning_rate = 0.1", "learning_rate = 0.2"))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    coordinator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fl_core.cli",
            "coordinator",
            str(job),
            "--state",
            str(tmp_path / "s.db"),
            "--address",
            f"127.0.0.1:{port}",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        done = bulwark(
            "client",
            "--coordinator",
            f"127.0.0.1:{port}",
            "--job",
            str(other),
            "--partition",
            "0",
            "--quiet",
            timeout=120,
        )
    finally:
        coordinator.kill()
        coordinator.wait()
    assert done.returncode == 2
    assert "agreed to a different job file" in done.stderr
    # The field is named, from digests of the client's fields (neither file is sent).
    assert "they differ in train.learning_rate" in done.stderr


def test_a_client_fails_fast_with_one_line(tmp_path: Path) -> None:
    """No port, and nobody listening: one line each, not a silent wait (issue 11)."""
    job = _short_job(tmp_path, rounds=1)
    no_port = bulwark("client", "--coordinator", "127.0.0.1", "--job", str(job), "--partition", "0")
    assert no_port.returncode == 2
    assert "--coordinator 127.0.0.1: expected HOST:PORT" in no_port.stderr
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nobody = bulwark(
        "client", "--coordinator", f"127.0.0.1:{port}", "--job", str(job), "--partition", "0",
        "--connect-timeout", "1", timeout=60,
    )  # fmt: skip
    assert nobody.returncode == 2
    assert "coordinator unreachable for 1 s" in nobody.stderr
    assert "Traceback" not in nobody.stderr


def test_the_coordinator_writes_metrics_with_its_wall_time(tmp_path: Path) -> None:
    job = _short_job(tmp_path, rounds=2)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    coordinator = subprocess.Popen(
        [
            sys.executable, "-m", "fl_core.cli", "coordinator", str(job), "--state",
            str(tmp_path / "s.db"), "--address", f"127.0.0.1:{port}", "--output", str(out),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    clients = [
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
                "--threads",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for i in range(5)
    ]
    try:
        _, err = coordinator.communicate(timeout=240)
    finally:
        for c in clients:
            c.wait(timeout=60)
    assert coordinator.returncode == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert len(metrics["rounds"]) == 2
    assert metrics["seconds"] > 0
