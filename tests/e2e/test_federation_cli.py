"""``bulwark federation`` and a roster-bound deployment over loopback gRPC, as processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

JOB = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer" / "job.toml"


def bulwark(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        _cli(*args), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _short_job(tmp_path: Path, rounds: int) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(JOB.read_text().replace("rounds = 10", f"rounds = {rounds}"))
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fl_core.cli", *args]


def _federation(tmp_path: Path, owners: list[str]) -> Path:
    fed = tmp_path / "fed"
    done = bulwark("federation", "init", "--out", str(fed), "--name", "clinics")
    assert done.returncode == 0, done.stderr
    for name in [*owners, "coordinator"]:
        key = tmp_path / f"{name}.pem"
        pub = bulwark("public-key", str(key))
        assert pub.returncode == 0, pub.stderr
        role = "coordinator" if name == "coordinator" else "owner"
        added = bulwark(
            "federation", "add", name, "--role", role, "--key", pub.stdout.strip(),
            "--authority", str(fed),
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
    return fed


def test_init_add_show_verify_and_tamper(tmp_path: Path) -> None:
    fed = _federation(tmp_path, ["hospital-a", "hospital-b"])
    roster, pub = fed / "roster.json", fed / "authority.pub.pem"
    assert (fed / "authority.pem").stat().st_mode & 0o777 == 0o600
    shown = bulwark("federation", "show", str(roster), "--authority", str(pub))
    assert shown.returncode == 0, shown.stderr
    assert "3 members" in shown.stdout and "hospital-b" in shown.stdout
    assert bulwark("federation", "verify", str(roster), "--authority", str(pub)).returncode == 0
    again = bulwark(
        "federation", "add", "hospital-a", "--role", "keyholder", "--key", "ab" * 32,
        "--authority", str(fed),
    )  # fmt: skip
    assert again.returncode == 2 and "--replace" in again.stderr
    # An edit by anyone without the authority key: the member becomes the key holder.
    doc = json.loads(roster.read_text())
    doc["roster"]["members"][0]["role"] = "keyholder"
    roster.write_text(json.dumps(doc))
    bad = bulwark("federation", "verify", str(roster), "--authority", str(pub))
    assert bad.returncode == 2
    assert "does not verify" in bad.stderr and "Traceback" not in bad.stderr
    half = bulwark("client", "--coordinator", "127.0.0.1:1", "--job", str(tmp_path / "j.toml"),
                   "--partition", "0", "--federation", str(roster))  # fmt: skip
    assert half.returncode == 2


def test_a_roster_bound_deployment_admits_members_only(tmp_path: Path) -> None:
    owners = [f"client-{i}" for i in range(5)]
    fed = _federation(tmp_path, owners)
    roster, pub = str(fed / "roster.json"), str(fed / "authority.pub.pem")
    job = _short_job(tmp_path, rounds=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    coordinator = subprocess.Popen(
        _cli("coordinator", str(job), "--state", str(tmp_path / "s.db"), "--address", address,
             "--federation", roster, "--authority", pub,
             "--identity", str(tmp_path / "coordinator.pem"), "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    member_args = ["--federation", roster, "--authority", pub, "--quiet", "--threads", "1"]
    try:
        # An outsider with its own key, and one that claims a member's name with another key.
        for name in ["intruder", "client-0"]:
            refused = bulwark(
                "client", "--coordinator", address, "--job", str(job), "--partition", "0",
                "--name", name, "--identity", str(tmp_path / f"{name}-own.pem"),
                "--connect-timeout", "20", "--quiet",
            )  # fmt: skip
            assert refused.returncode == 2, refused.stderr
            assert "roster" in refused.stderr and "Traceback" not in refused.stderr
        clients = [
            subprocess.Popen(
                _cli(
                    "client",
                    "--coordinator",
                    address,
                    "--job",
                    str(job),
                    "--partition",
                    str(i),
                    "--name",
                    name,
                    "--identity",
                    str(tmp_path / f"{name}.pem"),
                    *member_args,
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for i, name in enumerate(owners)
        ]
        _, err = coordinator.communicate(timeout=240)
        assert coordinator.returncode == 0, err
        for c in clients:
            _, cerr = c.communicate(timeout=60)
            assert c.returncode == 0, cerr
    finally:
        coordinator.kill()


def test_the_coordinator_keeps_mtls_for_a_statistics_job(tmp_path: Path) -> None:
    """Issue 9, item 8: ``bulwark coordinator --tls-client-ca`` dropped mTLS for stats jobs.

    On 4de7ea1 a client without a certificate joined a statistics job served with
    ``--tls-client-ca``; now its handshake fails.
    """
    import asyncio
    import time

    import grpc
    import trustme

    from fl_core.errors import FlCoreError
    from fl_core.transport.base import JoinRequest
    from fl_core.transport.grpc_client import GrpcClientTransport

    ca, client_ca = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("localhost")
    files = {
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
        "client_ca": tmp_path / "client_ca.pem",
    }
    files["cert"].write_bytes(cert.cert_chain_pems[0].bytes())
    files["key"].write_bytes(cert.private_key_pem.bytes())
    files["client_ca"].write_bytes(client_ca.cert_pem.bytes())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = Path(__file__).resolve().parents[2] / "examples" / "he_statistics" / "job.toml"
    server = subprocess.Popen(
        _cli("coordinator", str(job), "--state", str(tmp_path / "s.db"),
             "--address", f"localhost:{port}", "--tls-cert", str(files["cert"]),
             "--tls-key", str(files["key"]), "--tls-client-ca", str(files["client_ca"]),
             "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def listening() -> bool:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                if server.poll() is not None:
                    return False
                time.sleep(0.5)
        return False

    async def join(credentials: grpc.ChannelCredentials) -> str:
        transport = GrpcClientTransport(
            f"localhost:{port}", call_timeout=5.0, credentials=credentials
        )
        request = JoinRequest(
            client_name="x", identity_public_key=b"x" * 32, job_config_sha256="0" * 64
        )
        try:
            await transport.join(request)
        except FlCoreError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            await transport.close()
        return "joined"

    member = client_ca.issue_cert("hospital.example")
    with_certificate = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem.bytes(),
        private_key=member.private_key_pem.bytes(),
        certificate_chain=member.cert_chain_pems[0].bytes(),
    )
    try:
        assert listening(), "the coordinator did not start listening"
        without = asyncio.run(join(grpc.ssl_channel_credentials(ca.cert_pem.bytes())))
        served = asyncio.run(join(with_certificate))
    finally:
        server.kill()
        server.communicate(timeout=30)
    assert without.startswith(("TransportUnavailable", "TransportError")), without
    assert served.startswith("ConfigError") and "different job file" in served, served
