"""Join by proof of possession, and the roster at join (issue 9, item 5).

On the code before, knowing an owner's public key was enough to join under its name: the
coordinator handed a session to whoever sent the name and key, locking the owner out. Anyone could
join as ``keyholder``. Now a join is a signed answer to a fresh, single-use challenge, and with a
roster only its members join, in their role, under their key and (with mutual TLS) certificate.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import LinearTrainer, job_text, make_coordinator, parse

from fl_core.client.runtime import Client
from fl_core.coordinator.service import CHALLENGE_TTL_S, Coordinator
from fl_core.coordinator.store import Store
from fl_core.errors import ConfigError, PolicyRefused, ProtocolError
from fl_core.federation import (
    Member,
    Roster,
    join_message,
    raw_public,
    simulated_roster,
)
from fl_core.transport.base import JoinReply, JoinRequest
from fl_core.transport.inmemory import InMemoryTransport


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def coordinator(tmp_path: Path, extra: str = "", **kwargs: object) -> Coordinator:
    job = parse(job_text(extra=extra))
    store = Store(tmp_path / "c.db")
    base = make_coordinator(job, store, LinearTrainer(0))
    return Coordinator(
        job,
        store=store,
        initial_weights=base.initial_weights,
        strategy=base.strategy,
        aggregator=base.aggregator,
        **kwargs,  # type: ignore[arg-type]
    )


def request(c: Coordinator, name: str, key: Ed25519PrivateKey | bytes, **kw: object) -> JoinRequest:
    pub = key if isinstance(key, bytes) else raw_public(key.public_key())
    return JoinRequest(
        client_name=name,
        identity_public_key=pub,
        job_config_sha256=c.job.sha256,
        **kw,  # type: ignore[arg-type]
    )


async def join(c: Coordinator, name: str, key: Ed25519PrivateKey, role: str = "owner") -> JoinReply:
    """An honest two-step join."""
    offer = await c.join(request(c, name, key, role=role))
    proof = key.sign(
        join_message(job_sha256=c.job.sha256, name=name, role=role, challenge=offer.challenge)
    )
    return await c.join(request(c, name, key, role=role, challenge=offer.challenge, proof=proof))


def test_a_public_key_alone_does_not_take_over_an_owner(tmp_path: Path) -> None:
    c = coordinator(tmp_path)
    victim = Ed25519PrivateKey.generate()
    victim_pub = raw_public(victim.public_key())

    async def main() -> None:
        honest = await join(c, "client-0", victim)
        assert honest.session_token
        # The attacker knows the victim's public key (SecAgg relays it to every peer).
        reply = await c.join(request(c, "client-0", victim_pub))
        assert reply.session_token == "" and reply.client_id == ""  # only a challenge
        forged = Ed25519PrivateKey.generate().sign(
            join_message(
                job_sha256=c.job.sha256, name="client-0", role="owner", challenge=reply.challenge
            )
        )
        with pytest.raises(PolicyRefused, match="did not prove it holds"):
            await c.join(
                request(c, "client-0", victim_pub, challenge=reply.challenge, proof=forged)
            )
        # The victim's session is untouched.
        assert c.registry.get("client-0", honest.session_token).client_id == "client-0"

    asyncio.run(main())


def test_a_challenge_is_single_use_bound_and_expires(tmp_path: Path) -> None:
    clock = Clock()
    c = coordinator(tmp_path, clock=clock)
    key = Ed25519PrivateKey.generate()

    async def main() -> None:
        offer = await c.join(request(c, "a", key))
        proof = key.sign(
            join_message(job_sha256=c.job.sha256, name="a", role="owner", challenge=offer.challenge)
        )
        answer = request(c, "a", key, challenge=offer.challenge, proof=proof)
        assert (await c.join(answer)).session_token
        with pytest.raises(PolicyRefused, match="already used or expired"):
            await c.join(answer)  # a replayed proof
        # A proof for another role does not pass for this one.
        offer = await c.join(request(c, "a", key))
        wrong_role = key.sign(
            join_message(
                job_sha256=c.job.sha256, name="a", role="keyholder", challenge=offer.challenge
            )
        )
        with pytest.raises(PolicyRefused, match="did not prove"):
            await c.join(request(c, "a", key, challenge=offer.challenge, proof=wrong_role))
        # An expired challenge.
        offer = await c.join(request(c, "a", key))
        clock.now += CHALLENGE_TTL_S + 1
        late = key.sign(
            join_message(job_sha256=c.job.sha256, name="a", role="owner", challenge=offer.challenge)
        )
        with pytest.raises(PolicyRefused, match="expired"):
            await c.join(request(c, "a", key, challenge=offer.challenge, proof=late))
        with pytest.raises(PolicyRefused, match="no Ed25519 identity key"):
            await c.join(request(c, "b", b""))

    asyncio.run(main())


def test_max_clients_caps_joins(tmp_path: Path) -> None:
    c = coordinator(tmp_path, extra="[limits]\nmax_clients = 2\n")

    async def main() -> None:
        keys = [Ed25519PrivateKey.generate() for _ in range(3)]
        await join(c, "a", keys[0])
        await join(c, "b", keys[1])
        with pytest.raises(PolicyRefused, match="max_clients = 2"):
            await c.join(request(c, "c", keys[2]))
        assert (await join(c, "a", keys[0])).session_token  # a member may rejoin

    asyncio.run(main())


def test_with_a_roster_only_members_join_in_their_role(tmp_path: Path) -> None:
    roster, keys = simulated_roster(["a", "b"], keyholders=["kh"])
    c = coordinator(tmp_path, roster=roster, identity_key=keys["coordinator"])

    async def main() -> None:
        assert (await join(c, "a", keys["a"])).session_token
        with pytest.raises(PolicyRefused, match="'mallory' is not on"):
            await join(c, "mallory", Ed25519PrivateKey.generate())
        # An owner, or an outsider, cannot join as the key holder.
        with pytest.raises(PolicyRefused, match="as keyholder"):
            await join(c, "a", keys["a"], role="keyholder")
        with pytest.raises(PolicyRefused, match="not its key on the roster"):
            await join(c, "kh", Ed25519PrivateKey.generate(), role="keyholder")
        assert (await join(c, "kh", keys["kh"], role="keyholder")).session_token
        # Squatting a member's name with another key, before the member joins.
        with pytest.raises(PolicyRefused, match="not its key on the roster"):
            await join(c, "b", Ed25519PrivateKey.generate())

    asyncio.run(main())


def test_with_a_roster_the_certificate_is_bound_to_the_name(tmp_path: Path) -> None:
    authority = Ed25519PrivateKey.generate()
    key = Ed25519PrivateKey.generate()
    member = Member(name="a", role="owner", key=raw_public(key.public_key()), cert_sha256="ab" * 32)
    roster, _ = Roster.sign("f", [member], authority)
    c = coordinator(tmp_path, roster=roster)

    async def main() -> None:
        with pytest.raises(PolicyRefused, match="roster TLS certificate"):
            await c.join(request(c, "a", key, peer_cert_sha256="cd" * 32))
        with pytest.raises(PolicyRefused, match="got none"):
            await c.join(request(c, "a", key))
        offer = await c.join(request(c, "a", key, peer_cert_sha256="ab" * 32))
        assert offer.challenge

    asyncio.run(main())


def test_a_coordinator_key_off_the_roster_is_a_config_error(tmp_path: Path) -> None:
    roster, _ = simulated_roster(["a"])
    with pytest.raises(ConfigError, match="not the key the roster lists"):
        coordinator(tmp_path, roster=roster, identity_key=Ed25519PrivateKey.generate())


def _client(job, roster: Roster, key: Ed25519PrivateKey) -> Client:  # type: ignore[no-untyped-def]
    return Client(name="a", job=job, trainer=LinearTrainer(0), identity_key=key, roster=roster)


def test_an_owner_with_a_roster_joins_only_the_roster_coordinator(tmp_path: Path) -> None:
    roster, keys = simulated_roster(["a"])
    impostor = coordinator(tmp_path, identity_key=Ed25519PrivateKey.generate())
    client = _client(impostor.job, roster, keys["a"])

    async def main() -> None:
        with pytest.raises(PolicyRefused, match="did not prove it is 'coordinator'"):
            await client.run(InMemoryTransport(impostor))
        unsigned = coordinator(tmp_path / "u")
        with pytest.raises(PolicyRefused, match="did not prove"):
            await _client(unsigned.job, roster, keys["a"]).run(InMemoryTransport(unsigned))

    (tmp_path / "u").mkdir()
    asyncio.run(main())


def test_an_owner_off_the_roster_is_a_config_error(tmp_path: Path) -> None:
    roster, _ = simulated_roster(["a"])
    job = parse(job_text())
    with pytest.raises(ConfigError, match="not the key the roster lists"):
        _client(job, roster, Ed25519PrivateKey.generate())


def test_the_honest_federation_runs_with_a_roster(tmp_path: Path) -> None:
    names = [f"client-{i}" for i in range(5)]
    roster, keys = simulated_roster(names)
    c = coordinator(tmp_path, roster=roster, identity_key=keys["coordinator"])
    clients = [
        Client(name=n, job=c.job, trainer=LinearTrainer(i), identity_key=keys[n], roster=roster)
        for i, n in enumerate(names)
    ]

    async def main():  # type: ignore[no-untyped-def]
        run = asyncio.create_task(c.run())
        await asyncio.gather(*(cl.run(InMemoryTransport(c)) for cl in clients))
        return await run

    assert asyncio.run(main()).status == "completed"


def test_a_coordinator_that_sends_no_challenge_is_refused(tmp_path: Path) -> None:
    c = coordinator(tmp_path)

    class NoChallenge:
        async def join(self, req: JoinRequest) -> JoinReply:
            reply = await c.join(req)
            return dataclasses.replace(reply, challenge=b"")

    client = Client(name="a", job=c.job, trainer=LinearTrainer(0))
    with pytest.raises(ProtocolError, match="challenge"):
        asyncio.run(client._join_once(NoChallenge()))  # type: ignore[arg-type]
