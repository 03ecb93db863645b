"""Running the ``bulwark`` command line from tests: one-shot commands and long-running servers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BREAST_CANCER = ROOT / "examples" / "breast_cancer" / "job.toml"


def command(*args: str) -> list[str]:
    """The ``bulwark`` console script of this interpreter's environment, with ``args``."""
    exe = shutil.which("bulwark", path=str(Path(sys.executable).parent))
    return [*([exe] if exe else [sys.executable, "-m", "fl_core.cli"]), *args]


def environment() -> dict[str, str]:
    """The test's environment with one torch thread per process (2-core CI machines)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def bulwark(
    *args: str, timeout: float = 300, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one ``bulwark`` command to its end; ``timeout`` bounds a hang (it raises)."""
    return subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or environment(),
        check=False,
        cwd=cwd,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(
    *args: str, ready: str, timeout: float = 120, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Start a long-running ``bulwark`` command; yield it once ``ready`` appears on its stderr.

    The process is killed when the block ends (it is waited for, so nothing is left behind).
    """
    proc = subprocess.Popen(
        command(*args), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=env or environment(),
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise AssertionError(f"{args[0]} exited {proc.returncode}: {''.join(seen)}")
            seen.append(line)
            if ready in line:
                break
        else:
            raise AssertionError(f"{args[0]} did not print {ready!r}: {''.join(seen)}")
        yield proc
    finally:
        proc.kill()
        proc.communicate()


def one_line(stderr: str) -> str:
    """The single non-empty line of ``stderr``; fails when there are more (or none)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{stderr}"
    return lines[0]


def bulwark_env(site: Path) -> dict[str, str]:
    """The test's environment with ``site`` (a ``pip install --target`` folder) importable."""
    return {
        **environment(),
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
