"""Test support: a small numpy trainer that records its updates, and federation runners."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fl_core.aggregators import create_aggregator
from fl_core.client.runtime import Client, ClientOptions
from fl_core.config import JobConfig, parse_job
from fl_core.coordinator.service import Coordinator
from fl_core.coordinator.store import Store
from fl_core.federation import join_message
from fl_core.strategies import create_strategy
from fl_core.transport.base import ClientTransport, JobDone, JoinReply, JoinRequest
from fl_core.types import EvaluateResult, FitConfig, FitResult, Layout, Weights

TRUE_W = np.array([1.0, -2.0, 3.0, 0.5], np.float32)


def job_text(
    *,
    name: str = "test-job",
    rounds: int = 3,
    clients: int = 5,
    min_clients: int = 5,
    timeout: float = 20.0,
    quorum: float = 1.0,
    strategy: str = "fedavg",
    extra: str = "",
) -> str:
    return f"""
[job]
name = "{name}"
rounds = {rounds}
seed = 11
[data]
dataset = "synthetic"
num_clients = {clients}
[model]
name = "linear"
[train]
learning_rate = 0.05
[strategy]
name = "{strategy}"
server_learning_rate = {0.1 if strategy.startswith("fedad") or strategy == "fedyogi" else 1.0}
[sampling]
min_clients = {min_clients}
wait_for_clients_s = 30
[round]
stage_timeout_s = {timeout}
quorum_fraction = {quorum}
max_attempts = 2
{extra}
"""


@dataclass
class LinearTrainer:
    """Least-squares linear regression trained by full-batch gradient descent (deterministic).

    It records every fit as (round, start weights, new weights, examples), so a test can
    recompute FedAvg from the clients' own updates.
    """

    index: int
    examples: int = 0
    fits: list[tuple[int, Weights, Weights, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.index)
        self.examples = self.examples or 20 + 7 * self.index
        self.x = rng.normal(size=(self.examples, 4)).astype(np.float32)
        noise = 0.1 * rng.normal(size=self.examples).astype(np.float32)
        self.y = (self.x @ TRUE_W + 0.3 * self.index + noise).astype(np.float32)

    def initial_weights(self) -> Weights:
        return {"w": np.zeros(4, np.float32), "b": np.zeros(1, np.float32)}

    def fit(self, weights: Weights, config: FitConfig) -> FitResult:
        w, b = weights["w"].copy(), weights["b"].copy()
        for _ in range(5):
            err = self.x @ w + b - self.y
            w = (w - config.learning_rate * (self.x.T @ err) / len(err)).astype(np.float32)
            b = (b - config.learning_rate * err.mean(keepdims=True)).astype(np.float32)
        new = {"w": w, "b": b}
        self.fits.append(
            (config.round, {k: v.copy() for k, v in weights.items()}, new, self.examples)
        )
        loss = float(((self.x @ w + b - self.y) ** 2).mean())
        return FitResult(weights=new, num_examples=self.examples, metrics={"loss": loss})

    def evaluate(self, weights: Weights) -> EvaluateResult:
        err = self.x @ weights["w"] + weights["b"] - self.y
        return EvaluateResult(
            num_examples=self.examples,
            loss=float((err**2).mean()),
            metrics={"mae": float(np.abs(err).mean())},
        )


def make_coordinator(job: JobConfig, store: Store, trainer: LinearTrainer) -> Coordinator:
    weights = trainer.initial_weights()
    return Coordinator(
        job,
        store=store,
        initial_weights=Layout.of(weights).flatten(weights),
        strategy=create_strategy(job.strategy),
        aggregator=create_aggregator(job),
    )


async def run_federation(
    job: JobConfig,
    coordinator: Coordinator,
    clients: Sequence[Client],
    transports: Sequence[ClientTransport],
) -> JobDone:
    results = await asyncio.gather(
        coordinator.run(), *(c.run(t) for c, t in zip(clients, transports, strict=True))
    )
    for t in transports:
        await t.close()
    return results[0]


def make_clients(job: JobConfig, trainers: Sequence[LinearTrainer]) -> list[Client]:
    return [
        Client(
            name=f"client-{t.index}",
            job=job,
            trainer=t,
            options=ClientOptions(long_poll_s=5.0, backoff_initial_s=0.05),
        )
        for t in trainers
    ]


def fedavg_oracle(trainers: Sequence[LinearTrainer], rnd: int) -> np.ndarray:
    """FedAvg of round ``rnd`` recomputed from what the trainers recorded."""
    fits = [f for t in trainers for f in t.fits if f[0] == rnd]
    layout = Layout.of(fits[0][1])
    start = layout.flatten(fits[0][1])
    for _, begin, _, _ in fits:
        np.testing.assert_array_equal(layout.flatten(begin), start)  # all got the same model
    total = sum(n for *_, n in fits)
    mean = sum(
        (layout.flatten(new).astype(np.float64) - start) * (n / total) for _, _, new, n in fits
    )
    return (start + np.asarray(mean, np.float64).astype(np.float32)).astype(np.float32)


def parse(text: str) -> JobConfig:
    return parse_job(text)


async def proven_join(
    transport: ClientTransport,
    job: JobConfig,
    name: str,
    key: Ed25519PrivateKey | None = None,
    *,
    role: str = "owner",
) -> JoinReply:
    """Join as ``name`` the way the client runtime does: a challenge, then its signed answer."""
    key = key or Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    request = JoinRequest(
        client_name=name, identity_public_key=pub, job_config_sha256=job.sha256, role=role
    )
    offer = await transport.join(request)
    proof = key.sign(
        join_message(job_sha256=job.sha256, name=name, role=role, challenge=offer.challenge)
    )
    return await transport.join(
        dataclasses.replace(request, challenge=offer.challenge, proof=proof)
    )
