"""``bulwark client --metrics-port``: an owner's Prometheus endpoint, against a real coordinator."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cli_support import BREAST_CANCER, bulwark, command, environment, free_port, one_line

pytestmark = pytest.mark.integration


def _job(tmp_path: Path) -> Path:
    job = tmp_path / "job.toml"
    text = BREAST_CANCER.read_text().replace("rounds = 10", "rounds = 3")
    text = text.replace("min_clients = 5", "min_clients = 2")
    job.write_text(text.replace("num_clients = 5", "num_clients = 2"))
    return job


def test_a_taken_metrics_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = bulwark(
            "client", "--coordinator", "127.0.0.1:9", "--job", str(_job(tmp_path)),
            "--partition", "0", "--metrics-port", str(port), "--connect-timeout", "5",
        )  # fmt: skip
    assert done.returncode == 2
    assert f"--metrics-port {port}:" in one_line(done.stderr)


def test_an_owner_serves_its_counts_while_it_takes_part(tmp_path: Path) -> None:
    # Prepare: a coordinator for two owners; owner 0 serves metrics.
    job = _job(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    metrics_port = free_port()
    env = environment()
    coordinator = subprocess.Popen(
        command("coordinator", str(job), "--state", str(tmp_path / "s.db"), "--address", address,
                "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    owners = [
        subprocess.Popen(
            command(
                "client",
                "--coordinator",
                address,
                "--job",
                str(job),
                "--partition",
                str(i),
                "--threads",
                "1",
                "--quiet",
                *(["--metrics-port", str(metrics_port)] if i == 0 else []),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        # Execute: scrape owner 0 until it has released a result, while the process is still
        # up (it ends with the job, so the last counts may come too late to be scraped).
        values: dict[str, float] = {}
        deadline = time.monotonic() + 240
        while values.get("bulwark_owner_releases", 0.0) < 1 and time.monotonic() < deadline:
            if owners[0].poll() is not None:
                break
            try:
                url = f"http://127.0.0.1:{metrics_port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as reply:
                    text = reply.read().decode()
            except OSError:
                time.sleep(0.2)
                continue
            pattern = r'^(bulwark_owner_\w+)_total\{job="[^"]*",owner="client-0"\} (\S+)$'
            values = {m[1]: float(m[2]) for m in re.finditer(pattern, text, flags=re.M)}
            time.sleep(0.05)
        _, err = coordinator.communicate(timeout=240)
        assert coordinator.returncode == 0, err
        for owner in owners:
            _, err = owner.communicate(timeout=60)
            assert owner.returncode == 0, err
    finally:
        for proc in [coordinator, *owners]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # Assert: a release was counted with its bytes, after its task; nothing refused.
    assert values["bulwark_owner_releases"] >= 1, values
    assert values["bulwark_owner_tasks_received"] >= values["bulwark_owner_releases"]
    assert values["bulwark_owner_joins"] == 1.0
    assert values["bulwark_owner_tasks_refused"] == 0.0
    assert values["bulwark_owner_bytes_released"] > 0
