"""Mutual TLS with a roster over loopback gRPC (issue 9): names, keys and certificates bound.

The coordinator takes each client's certificate from the TLS handshake and requires the roster's
fingerprint for the name; the name must be on the roster with the key that signs the join
challenge. A client with a valid certificate from the federation's CA but a name, key or
certificate that is not its roster entry is refused, a replayed join proof is refused, and the
job completes for the members.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import grpc
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import LinearTrainer, job_text, make_coordinator, parse

from fl_core.client.runtime import Client, ClientOptions
from fl_core.coordinator.service import Coordinator
from fl_core.coordinator.store import Store
from fl_core.errors import PolicyRefused
from fl_core.federation import Member, Roster, cert_fingerprint, join_message, raw_public
from fl_core.transport.base import JoinRequest
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve

pytestmark = pytest.mark.integration

NAMES = ["client-0", "client-1", "client-2"]


def test_roster_binds_name_key_and_certificate_under_mtls(tmp_path: Path) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server_cert = server_ca.issue_cert("localhost")
    certs = {n: client_ca.issue_cert(f"{n}.example") for n in [*NAMES, "outsider"]}
    keys = {n: Ed25519PrivateKey.generate() for n in [*NAMES, "outsider", "coordinator"]}
    members = [
        Member(
            name=n,
            role="owner",
            key=raw_public(keys[n].public_key()),
            cert_sha256=cert_fingerprint(certs[n].cert_chain_pems[0].bytes()),
        )
        for n in NAMES
    ]
    members.append(
        Member(
            name="coordinator", role="coordinator", key=raw_public(keys["coordinator"].public_key())
        )
    )
    roster, _ = Roster.sign("clinics", members, Ed25519PrivateKey.generate())

    job = parse(job_text(rounds=2, clients=3, min_clients=3))
    trainers = [LinearTrainer(i) for i in range(3)]
    store = Store(tmp_path / "s.db")
    base = make_coordinator(job, store, trainers[0])
    coordinator = Coordinator(
        job,
        store=store,
        initial_weights=base.initial_weights,
        strategy=base.strategy,
        aggregator=base.aggregator,
        roster=roster,
        identity_key=keys["coordinator"],
    )

    def channel(cert_of: str) -> grpc.ChannelCredentials:
        cert = certs[cert_of]
        return grpc.ssl_channel_credentials(
            root_certificates=server_ca.cert_pem.bytes(),
            private_key=cert.private_key_pem.bytes(),
            certificate_chain=cert.cert_chain_pems[0].bytes(),
        )

    async def attempt(name: str, key_of: str, cert_of: str) -> str:
        transport = GrpcClientTransport(target, credentials=channel(cert_of), call_timeout=5.0)
        intruder = Client(name=name, job=job, trainer=LinearTrainer(0), identity_key=keys[key_of])
        try:
            await intruder._join(transport)
        except PolicyRefused as exc:
            return str(exc)
        finally:
            await transport.close()
        return "joined"

    async def main():  # type: ignore[no-untyped-def]
        nonlocal target
        handle = await serve(
            coordinator,
            address="localhost:0",
            limits=job.limits,
            credentials=grpc.ssl_server_credentials(
                [(server_cert.private_key_pem.bytes(), server_cert.cert_chain_pems[0].bytes())],
                root_certificates=client_ca.cert_pem.bytes(),
                require_client_auth=True,
            ),
        )
        target = f"localhost:{handle.port}"
        try:
            # A valid certificate, but a name off the roster; a member's name with another key;
            # a member's key (say it leaked) with another member's certificate.
            assert "not on federation 'clinics'" in await attempt(
                "outsider", "outsider", "outsider"
            )
            assert "not its key on the roster" in await attempt("client-0", "outsider", "client-0")
            assert "roster TLS certificate" in await attempt("client-1", "client-1", "outsider")
            # A replayed join proof (recorded from a member's join) is refused.
            transport = GrpcClientTransport(target, credentials=channel("client-2"))
            key = keys["client-2"]
            request = JoinRequest(
                client_name="client-2",
                identity_public_key=raw_public(key.public_key()),
                job_config_sha256=job.sha256,
            )
            offer = await transport.join(request)
            proof = key.sign(
                join_message(
                    job_sha256=job.sha256, name="client-2", role="owner", challenge=offer.challenge
                )
            )
            answer = dataclasses.replace(request, challenge=offer.challenge, proof=proof)
            assert (await transport.join(answer)).session_token
            with pytest.raises(PolicyRefused, match="already used"):
                await transport.join(answer)
            await transport.close()
            # The members run the job.
            clients = [
                Client(
                    name=n,
                    job=job,
                    trainer=trainers[i],
                    identity_key=keys[n],
                    roster=roster,
                    options=ClientOptions(long_poll_s=5.0, backoff_initial_s=0.05),
                )
                for i, n in enumerate(NAMES)
            ]
            transports = [GrpcClientTransport(target, credentials=channel(n)) for n in NAMES]
            try:
                return await asyncio.gather(
                    coordinator.run(), *(c.run(t) for c, t in zip(clients, transports, strict=True))
                )
            finally:
                for t in transports:
                    await t.close()
        finally:
            await handle.stop()

    target = ""
    done, *_ = asyncio.run(main())
    assert done.status == "completed"
    assert [m["num_clients"] for m in store.metrics(job.job.name)] == [3, 3]
    store.close()
