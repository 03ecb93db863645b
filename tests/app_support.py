"""Install the ``clinic-model`` example package (examples/clinic_model) with pip, offline.

It is installed as a data owner would install it (a real ``*.dist-info`` with ``RECORD`` and
entry points) but into a folder of the test's own, put on ``sys.path`` or ``PYTHONPATH``, never
into the shared environment. The source is copied first so that the build leaves nothing in the
repository.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "examples" / "clinic_model"


def install_clinic_model(folder: Path, *, edit: str = "") -> Path:
    """Install the package into ``folder / "site"`` and return that folder.

    Args:
        folder: a scratch folder.
        edit: text appended to ``clinic_model/model.py`` before installing (a changed release).
    """
    source = folder / "src-copy"
    shutil.copytree(FIXTURE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    if edit:
        model = source / "src" / "clinic_model" / "model.py"
        model.write_text(model.read_text() + edit)
    site = folder / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return site
