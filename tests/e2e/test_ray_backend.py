"""``bulwark simulate --backend ray``: the owners as tasks of a local Ray instance (bounded).

The owners run the ordinary client over gRPC, so the final model must be the in-memory
simulation's, bit for bit; a failing owner is reported by name, not hung on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

pytestmark = pytest.mark.integration

JOB = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer" / "job.toml"


def bulwark(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    return subprocess.run(
        [sys.executable, "-m", "fl_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_ray_backend_matches_in_memory(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(JOB.read_text().replace("rounds = 10", "rounds = 2"))
    ray_run = bulwark(
        "simulate", str(job), "--backend", "ray", "--ray-num-cpus", "0.4",
        "--output", str(tmp_path / "ray"), "--quiet",
    )  # fmt: skip
    assert ray_run.returncode == 0, ray_run.stderr[-2000:]
    mem_run = bulwark("simulate", str(job), "--output", str(tmp_path / "mem"), "--quiet")
    assert mem_run.returncode == 0, mem_run.stderr
    a = load_file(str(tmp_path / "ray" / "model.safetensors"))
    b = load_file(str(tmp_path / "mem" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    metrics = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    assert metrics["transport"] == "ray"
    assert [r["num_clients"] for r in metrics["rounds"]] == [5, 5]


def test_ray_options_are_checked() -> None:
    bad = bulwark("simulate", str(JOB), "--ray-address", "127.0.0.1:1")
    assert bad.returncode == 2 and "--ray-address needs --backend ray" in bad.stderr
    bad = bulwark("simulate", str(JOB), "--backend", "ray", "--ray-num-cpus", "0")
    assert bad.returncode == 2 and "num_cpus" in bad.stderr
