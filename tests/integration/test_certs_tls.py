"""Certificates made by ``bulwark certs`` carry a real mutual-TLS job on loopback.

The CA and certificates come from the command line (as a deployment makes them); a coordinator
serves them over gRPC and three clients with their own certificates complete a job. A client
without a certificate, one with a certificate of another CA, and one with an expired
certificate cannot even join.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest
from cli_support import bulwark
from support import LinearTrainer, job_text, make_clients, make_coordinator, parse

from fl_core.certs import issue_certificate
from fl_core.coordinator.store import Store
from fl_core.errors import TransportError
from fl_core.transport.base import JoinRequest
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve

pytestmark = pytest.mark.integration


def _certs(folder: Path, *args: str) -> None:
    done = bulwark("certs", *args, timeout=60)
    assert done.returncode == 0, done.stderr


def _channel(ca: Path, certs: Path | None, name: str | None) -> grpc.ChannelCredentials:
    if certs is None or name is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=(certs / f"{name}.key").read_bytes(),
        certificate_chain=(certs / f"{name}.pem").read_bytes(),
    )


def test_certificates_from_the_command_carry_an_mtls_job(tmp_path: Path) -> None:
    _certs(tmp_path, "init", "--out", str(tmp_path / "ca"), "--ca-name", "Test federation CA")
    _certs(tmp_path, "init", "--out", str(tmp_path / "other"), "--ca-name", "Someone else")
    _certs(
        tmp_path, "issue", "--ca", str(tmp_path / "ca"), "--name", "coordinator",
        "--san", "127.0.0.1", "--san", "localhost", "--out", str(tmp_path / "certs"),
    )  # fmt: skip
    for i in range(3):
        _certs(tmp_path, "issue", "--ca", str(tmp_path / "ca"), "--name", f"hospital-{i}",
               "--out", str(tmp_path / "certs"))  # fmt: skip
    _certs(tmp_path, "issue", "--ca", str(tmp_path / "other"), "--name", "stranger",
           "--out", str(tmp_path / "certs"))  # fmt: skip
    issue_certificate(
        tmp_path / "ca", name="expired", out=tmp_path / "certs", days=1,
        valid_from=dt.datetime.now(dt.UTC) - dt.timedelta(days=3),
    )  # fmt: skip
    ca, certs = tmp_path / "ca" / "ca.pem", tmp_path / "certs"
    server_credentials = grpc.ssl_server_credentials(
        [((certs / "coordinator.key").read_bytes(), (certs / "coordinator.pem").read_bytes())],
        root_certificates=ca.read_bytes(),
        require_client_auth=True,
    )
    job = parse(job_text(rounds=2, clients=3, min_clients=3))
    trainers = [LinearTrainer(i) for i in range(3)]
    store = Store(tmp_path / "s.db")
    coordinator = make_coordinator(job, store, trainers[0])
    clients = make_clients(job, trainers)

    async def main():
        handle = await serve(
            coordinator, address="127.0.0.1:0", limits=job.limits, credentials=server_credentials
        )
        target = f"127.0.0.1:{handle.port}"
        request = JoinRequest(
            client_name="outsider", identity_public_key=b"o" * 32, job_config_sha256=job.sha256
        )
        for name in (None, "stranger", "expired"):
            outsider = GrpcClientTransport(
                target, call_timeout=3.0, credentials=_channel(ca, certs, name)
            )
            with pytest.raises(TransportError):
                await outsider.join(request)
            await outsider.close()
        transports = [
            GrpcClientTransport(target, credentials=_channel(ca, certs, f"hospital-{i}"))
            for i in range(3)
        ]
        try:
            return await asyncio.gather(
                coordinator.run(), *(c.run(t) for c, t in zip(clients, transports, strict=True))
            )
        finally:
            for t in transports:
                await t.close()
            await handle.stop()

    done, *_ = asyncio.run(main())
    assert done.status == "completed"
    assert [m["num_clients"] for m in store.metrics(job.job.name)] == [3, 3]
    store.close()
