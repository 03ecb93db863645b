"""The Python blocks of docs/flower.md run as written (one script, in a fresh directory)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "flower.md"

pytestmark = pytest.mark.integration


def test_docs_flower_python_blocks_run(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 2
    script = tmp_path / "doc.py"
    script.write_text("\n".join(blocks) + "\nprint('mod plan', mod.plan.noise_multiplier)\n")
    root = str(DOC.parents[1])
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("completed [")
    assert lines[-1].startswith("mod plan ") and float(lines[-1].split()[-1]) > 0
    assert (tmp_path / "clinic-a-ledger.db").exists()
