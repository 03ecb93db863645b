"""HE aggregation in memory: a coordinator that substitutes its own public context is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import LinearTrainer, job_text, make_coordinator, parse

from fl_core.client.runtime import Client, ClientOptions
from fl_core.coordinator.store import Store
from fl_core.he_job import SignedContext
from fl_core.keyholder import SimulatedKeys
from fl_core.payload import Payload
from fl_core.transport.inmemory import InMemoryTransport

HE = "[aggregation]\nkind = 'he'\n[he]\nclip = 10.0\nmax_weight = 1000\n[evaluation]\nevery = 0\n"


class SubstitutingAggregator:
    """A dishonest coordinator: owners get a context from keys it made itself."""

    name = "he"
    needs_keyholder = True

    def __init__(self, inner: Any, forged: SignedContext) -> None:
        self.inner, self.forged = inner, forged

    def server_round(self, ctx: Any) -> Any:
        server = self.inner.server_round(ctx)
        honest = server.tasks

        def tasks(stage: str, alive: Any) -> dict[str, Payload]:
            out: dict[str, Payload] = honest(stage, alive)
            if stage == "he.contribute":
                out = {c: Payload({**dict(p), **self.forged.fields()}) for c, p in out.items()}
            return out

        server.tasks = tasks
        return server


def run(job: Any, coordinator: Any, participants: list[Any]) -> Any:
    async def main() -> Any:
        transports = [InMemoryTransport(coordinator, limits=job.limits) for _ in participants]
        return await asyncio.gather(
            coordinator.run(),
            *(p.run(t) for p, t in zip(participants, transports, strict=True)),
        )

    return asyncio.run(main())[0]


def test_owners_refuse_a_context_their_key_holder_did_not_sign(tmp_path: Path) -> None:
    job = parse(job_text(rounds=1, clients=4, min_clients=4, timeout=5.0, extra=HE))
    trainers = [LinearTrainer(i) for i in range(4)]
    names = [f"client-{i}" for i in range(4)]
    keys = SimulatedKeys.generate(names)
    own = SimulatedKeys.generate(names).keyholder_participant(job)  # the coordinator's own keys
    forged = SignedContext.create(job, own.public_context(), Ed25519PrivateKey.generate())
    store = Store(tmp_path / "s.db")
    coordinator = make_coordinator(job, store, trainers[0])
    coordinator.aggregator = SubstitutingAggregator(coordinator.aggregator, forged)
    clients = [
        Client(
            name=n,
            job=job,
            trainer=t,
            identity_key=keys.owners[n],
            policy=keys.owner_policy(),
            options=ClientOptions(long_poll_s=5.0),
        )
        for n, t in zip(names, trainers, strict=True)
    ]

    done = run(job, coordinator, [*clients, keys.keyholder_participant(job)])

    assert done.status == "failed"
    assert "not by a key holder the owner trusts" in done.reason
    assert all(not t.fits for t in trainers)  # refused before training, nothing encrypted
    assert own.decryption_log == ()
    store.close()


def test_a_round_without_a_key_holder_waits_then_fails(tmp_path: Path) -> None:
    text = job_text(rounds=1, clients=2, min_clients=2, timeout=2.0, extra=HE)
    job = parse(text.replace("wait_for_clients_s = 30", "wait_for_clients_s = 0.5"))
    trainers = [LinearTrainer(i) for i in range(2)]
    store = Store(tmp_path / "s.db")
    coordinator = make_coordinator(job, store, trainers[0])
    clients = [
        Client(name=f"client-{i}", job=job, trainer=t, options=ClientOptions(long_poll_s=1.0))
        for i, t in enumerate(trainers)
    ]

    done = run(job, coordinator, clients)

    assert done.status == "failed"
    assert "only 0 of the 1 keyholders needed joined" in done.reason
    store.close()
