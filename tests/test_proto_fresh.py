"""The committed protobuf modules are exactly what scripts/gen_proto makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "fl_core" / "transport" / "_pb"


def test_generated_modules_match_proto(tmp_path: Path) -> None:
    # Prepare / Execute
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
        capture_output=True,
    )
    # Assert
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*_pb2*")}
    committed = {p.name: p.read_text() for p in GENERATED.glob("*_pb2*")}
    assert fresh, "gen_proto produced nothing"
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated modules (run scripts/gen_proto): {stale}"
