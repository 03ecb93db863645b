"""TLS and mutual TLS on the gRPC transport, with a throwaway CA (trustme)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import trustme
from support import LinearTrainer, job_text, make_clients, make_coordinator, parse

from fl_core.coordinator.store import Store
from fl_core.errors import TransportError
from fl_core.transport.base import JoinRequest
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve

pytestmark = pytest.mark.integration


def _server_credentials(ca: trustme.CA, *, client_ca: trustme.CA | None) -> grpc.ServerCredentials:
    cert = ca.issue_cert("localhost")
    return grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())],
        root_certificates=client_ca.cert_pem.bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_a_job_runs_over_tls(tmp_path: Path, mutual: bool) -> None:
    ca = trustme.CA()
    client_ca = trustme.CA() if mutual else None
    job = parse(job_text(rounds=2, clients=3, min_clients=3))
    trainers = [LinearTrainer(i) for i in range(3)]
    store = Store(tmp_path / "s.db")
    coordinator = make_coordinator(job, store, trainers[0])
    clients = make_clients(job, trainers)

    def channel() -> grpc.ChannelCredentials:
        if client_ca is None:
            return grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        cert = client_ca.issue_cert("hospital.example")
        return grpc.ssl_channel_credentials(
            root_certificates=ca.cert_pem.bytes(),
            private_key=cert.private_key_pem.bytes(),
            certificate_chain=cert.cert_chain_pems[0].bytes(),
        )

    async def main():
        handle = await serve(
            coordinator,
            address="localhost:0",
            limits=job.limits,
            credentials=_server_credentials(ca, client_ca=client_ca),
        )
        target = f"localhost:{handle.port}"
        transports = [GrpcClientTransport(target, credentials=channel()) for _ in clients]
        # A plaintext client, and (mTLS) a client without a certificate, cannot even join.
        outsiders = [GrpcClientTransport(target, call_timeout=3.0)]
        if mutual:
            outsiders.append(
                GrpcClientTransport(
                    target,
                    call_timeout=3.0,
                    credentials=grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes()),
                )
            )
        request = JoinRequest(
            client_name="outsider", identity_public_key=b"o" * 32, job_config_sha256=job.sha256
        )
        for outsider in outsiders:
            with pytest.raises(TransportError):
                await outsider.join(request)
            await outsider.close()
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
