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
from cli_support import ROOT, bulwark, free_port, one_line, running

pytestmark = pytest.mark.integration

GUIDE = ROOT / "docs" / "deploy.md"


def bash_blocks(markdown: str) -> list[str]:
    """The contents of every fenced block whose info string is ``bash``, in order."""
    return re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M)


def _offline(text: str) -> str:
    offline = "pip install --quiet --no-deps --no-build-isolation --no-index --target site "
    return text.replace("pip install ", offline)


def _run(script: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script], cwd=folder, env=env,
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def guide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    """A folder after the guide's setup blocks (all but the last), its environment, and the last.

    The last block (coordinator and three clients) runs in the tests below.
    """
    folder = tmp_path_factory.mktemp("guide")
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT / "examples" / "clinic_model", folder / "examples" / "clinic_model",
                    ignore=skip)  # fmt: skip
    blocks = bash_blocks(GUIDE.read_text())
    assert sum(b.count("pip install ") for b in blocks) == 1
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(folder / "site"), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }
    done = _run(_offline("\n".join(blocks[:-1])), folder, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder, env, blocks[-1]


def test_the_deployment_guide_runs_as_written(guide: tuple[Path, dict[str, str], str]) -> None:
    folder, env, last = guide
    port = free_port()

    done = _run(last.replace("50051", str(port)), folder, env)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((folder / "results" / "metrics.json").read_text())
    assert metrics["status"] == "completed", metrics["reason"]
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3, 4, 5]
    assert all(r["num_clients"] == 3 for r in metrics["rounds"])
    assert metrics["rounds"][-1]["accuracy"] >= 0.85
    assert done.stdout.strip().endswith(f"completed {metrics['rounds'][-1]['accuracy']}")
    assert (folder / "results" / "model.safetensors").exists()
    job = (folder / "job.toml").read_text()
    assert 'distribution = "clinic-model"' in job and 'trainer = "weighted"' in job


def test_a_revoked_certificate_and_a_stranger_are_refused_at_join(
    guide: tuple[Path, dict[str, str], str], tmp_path: Path
) -> None:
    # Revocation, as the guide describes it: the authority replaces hospital-2's entry with a
    # new certificate; its old one (still valid for TLS, from the right CA) no longer joins.
    # A certificate of the right CA whose name is not on the roster does not join either.
    folder = tmp_path / "copy"
    shutil.copytree(guide[0], folder, ignore=shutil.ignore_patterns("results", "*.db"))
    env = guide[1]

    def path(name: str) -> str:
        return str(folder / name)

    for step in (
        ("certs", "issue", "--ca", path("ca"), "--name", "hospital-2-new", "--out", path("certs")),
        ("certs", "issue", "--ca", path("ca"), "--name", "stranger", "--out", path("certs")),
        ("federation", "add", "hospital-2", "--role", "owner", "--key", path("hospital-2.pem"),
         "--authority", path("federation"), "--cert", path("certs/hospital-2-new.pem"),
         "--replace"),
    ):  # fmt: skip
        assert bulwark(*step, env=env, timeout=60).returncode == 0
    address = f"127.0.0.1:{free_port()}"
    pins = ("--federation", path("federation/roster.json"))
    pins += ("--authority", path("federation/authority.pub.pem"))

    def client(name: str, cert: str) -> list[str]:
        return ["client", "--coordinator", address, "--job", path("job.toml"), "--name", name,
                "--data", path("hospital-2.csv"), "--identity", path(f"{name}.pem"),
                "--tls-ca", path("ca/ca.pem"), "--tls-cert", path(f"certs/{cert}.pem"),
                "--tls-key", path(f"certs/{cert}.key"), *pins]  # fmt: skip

    assert bulwark("public-key", "--create", path("stranger.pem"), env=env).returncode == 0
    with running(
        "coordinator", path("job.toml"), "--address", address, "--state", path("state.db"),
        "--tls-cert", path("certs/coordinator.pem"), "--tls-key", path("certs/coordinator.key"),
        "--tls-client-ca", path("ca/ca.pem"), "--identity", path("coordinator.pem"),
        "--name", "coordinator", *pins, "--quiet", ready="listening on port", env=env,
    ):  # fmt: skip
        revoked = bulwark(*client("hospital-2", "hospital-2"), env=env, timeout=120)
        stranger = bulwark(*client("stranger", "stranger"), env=env, timeout=120)

    assert revoked.returncode == 2
    assert "did not present its roster TLS certificate" in one_line(revoked.stderr)
    assert stranger.returncode == 2
    assert "'stranger' is not on federation 'tumour-study'" in one_line(stranger.stderr)


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
