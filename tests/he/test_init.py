from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import he


def test_all_is_exactly_the_public_names() -> None:
    public = {name for name in vars(he) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(he, name)).__name__ == "module"}
    assert set(he.__all__) == public - modules
    assert all(hasattr(he, name) for name in he.__all__)


def test_he_never_imports_fl_core_grpc_or_protobuf() -> None:
    code = (
        "import sys, he\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fl_core', 'grpc', 'google')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == ""
