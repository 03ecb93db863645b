"""docs/deploy.md, run as written: every ``bash`` block, in order, in a scratch folder.

Two things are changed so that the test runs offline and leaves the shared environment alone:
``pip install`` installs into the scratch folder (``--target``, no index, no build isolation),
which is then put on ``PYTHONPATH``; and the coordinator's port 50051 becomes a free one. The
``examples/clinic_model`` folder is copied in, so that the package build leaves nothing in the
checkout.
Then the job's results are checked: completed, every round with all three hospitals, and a
model that learned (the data are the breast-cancer measurements the tutorial's script writes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import ROOT, free_port

pytestmark = pytest.mark.integration

GUIDE = ROOT / "docs" / "deploy.md"


def bash_blocks(markdown: str) -> list[str]:
    """The contents of every fenced block whose info string is ``bash``, in order."""
    return re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M)


def _script(port: int) -> str:
    blocks = bash_blocks(GUIDE.read_text())
    text = "\n".join(blocks)
    offline = "pip install --quiet --no-deps --no-build-isolation --no-index --target site "
    assert text.count("pip install ") == 1
    text = text.replace("pip install ", offline).replace("50051", str(port))
    return "set -euo pipefail\n" + text


def test_the_deployment_guide_runs_as_written(tmp_path: Path) -> None:
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT / "examples" / "clinic_model", tmp_path / "examples" / "clinic_model",
                    ignore=skip)  # fmt: skip
    script = _script(free_port())
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }

    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert metrics["status"] == "completed", metrics["reason"]
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3, 4, 5]
    assert all(r["num_clients"] == 3 for r in metrics["rounds"])
    assert metrics["rounds"][-1]["accuracy"] >= 0.85
    assert done.stdout.strip().endswith(f"completed {metrics['rounds'][-1]['accuracy']}")
    assert (tmp_path / "results" / "model.safetensors").exists()
    job = (tmp_path / "job.toml").read_text()
    assert 'distribution = "clinic-model"' in job and 'trainer = "weighted"' in job


def test_a_hospital_with_another_release_of_the_package_is_refused(tmp_path: Path) -> None:
    # The job pins the release the authority approved; a hospital that installed a changed one
    # is refused before anything from the package is imported, naming the field.
    from app_support import install_clinic_model
    from cli_support import bulwark_env

    approved = install_clinic_model(tmp_path / "approved")
    changed = install_clinic_model(tmp_path / "changed", edit="\nimport os  # not reviewed\n")
    pin = subprocess.run(
        [sys.executable, "-m", "fl_core.cli", "code-hash", "clinic-model"],
        env=bulwark_env(approved), capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "t"\n[data]\ndataset = "d"\nnum_clients = 1\n'
        "[model]\ninput_shape = [10]\nnum_classes = 2\n"
        '[schema]\nfeatures = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]\n'
        'label = "y"\n' + pin + 'model = "mlp"\n'
    )
    (tmp_path / "rows.csv").write_text("a,b,c,d,e,f,g,h,i,j,y\n" + "0,1,2,3,4,5,6,7,8,9,1\n" * 4)

    done = subprocess.run(
        [sys.executable, "-m", "fl_core.cli", "client", "--coordinator", "127.0.0.1:9",
         "--job", str(job), "--data", str(tmp_path / "rows.csv"), "--name", "hospital-0"],
        env=bulwark_env(changed), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 2
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "code.sha256 = " in lines[0] and "nothing from it" in lines[0]
