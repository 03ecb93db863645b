"""Aggregators: the protocols that turn the cohort's local updates into one aggregate update.

An aggregator is a pair of state machines plugged into the coordinator's generic stage driver
(:mod:`fl_core.coordinator.driver`): :class:`ServerRound` on the coordinator and
:class:`ClientRound` at each data owner, one object per round attempt on each side. The server
side names its stages in order; for each stage it makes one task per live client, checks every
result when it arrives (a bad one is rejected and changes nothing), collects the stage's results
and learns who dropped, and finally yields the aggregate. The client side answers each stage's task.
Nothing here knows which transport carries the payloads.

Aggregators implemented: ``mean`` (:mod:`.mean`, in the clear), ``secagg``
(:mod:`.secure_sum`) and ``he`` (:mod:`.he_sum`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..payload import Payload
from ..types import FitConfig, Metrics

FloatVector = npt.NDArray[np.float32]


def model_hash(weights: FloatVector) -> bytes:
    """SHA-256 of a flat float32 model's little-endian bytes: binds a round to its model."""
    return hashlib.sha256(np.ascontiguousarray(weights, dtype="<f4").tobytes()).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundContext:
    """What the coordinator knows when a round attempt starts."""

    job_id: str
    round: int
    attempt: int
    global_weights: FloatVector
    fit: FitConfig
    cohort: tuple[str, ...]
    identities: Mapping[str, bytes] = field(default_factory=dict)
    keyholder: str | None = None
    rng: np.random.Generator = field(repr=False)

    @property
    def model_hash(self) -> bytes:
        """SHA-256 of this round's global model."""
        return model_hash(self.global_weights)


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateUpdate:
    """What a round's aggregation produced.

    Attributes:
        mean_update: the weighted mean of the contributors' updates (flat float32).
        contributors: the clients whose updates are in the mean.
        total_weight: the sum of their weights (examples, or capped examples).
        metrics: example-weighted means of the clients' training metrics.
        client_metrics: per-client training metrics where the protocol reveals them.
        details: protocol facts worth recording (dropped clients per stage, parameters, ...).
    """

    mean_update: FloatVector
    contributors: tuple[str, ...]
    total_weight: float
    metrics: Metrics = field(default_factory=dict)
    client_metrics: dict[str, Metrics] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)


class ServerRound(Protocol):
    """Coordinator side of one round attempt."""

    stages: tuple[str, ...]

    def tasks(self, stage: str, alive: Sequence[str]) -> dict[str, Payload]:
        """Return one task payload per live client for ``stage``."""
        ...

    def quorum(self, stage: str, sent: int) -> int:
        """How many of the ``sent`` tasks of ``stage`` must be answered for the round to go on."""
        ...

    def check(self, stage: str, client_id: str, payload: Payload) -> object:
        """Decode and check one result when it arrives; raise a CodecError to reject it."""
        ...

    def collect(self, stage: str, results: Mapping[str, object], dropped: Sequence[str]) -> None:
        """Take the stage's accepted results; raise RoundAborted if the round cannot go on."""
        ...

    def finish(self) -> AggregateUpdate:
        """Return the aggregate after the last stage."""
        ...


class Aggregator(Protocol):
    """Makes the coordinator side of each round attempt."""

    name: str

    def server_round(self, ctx: RoundContext) -> ServerRound:
        """A fresh server state machine for one round attempt."""
        ...


class ClientRound(Protocol):
    """Data-owner side of one round attempt; secrets live here, in memory only."""

    def handle(self, stage: str, payload: Payload) -> Payload:
        """Answer one task; raise PolicyRefused or a protocol abort to refuse it with a reason."""
        ...


# --- the round's training instructions, shared by every aggregator ------------------------------

_FIT_INT = ("round", "epochs", "batch_size", "seed", "max_steps")
_FIT_FLOAT = ("learning_rate", "momentum", "weight_decay", "proximal_mu")


def fit_to_fields(fit: FitConfig) -> dict[str, object]:
    """The ``fit.*`` fields of a task that carries local-training instructions."""
    out: dict[str, object] = {f"fit.{k}": int(getattr(fit, k)) for k in _FIT_INT}
    out.update({f"fit.{k}": float(getattr(fit, k)) for k in _FIT_FLOAT})
    out["fit.optimizer"] = fit.optimizer
    return out


def fit_from_payload(payload: Payload) -> FitConfig:
    """Read and range-check the ``fit.*`` fields of a task."""
    return FitConfig(
        round=payload.get_int("fit.round", lo=1, hi=10**7),
        epochs=payload.get_int("fit.epochs", lo=1, hi=10_000),
        batch_size=payload.get_int("fit.batch_size", lo=1, hi=1 << 20),
        seed=payload.get_int("fit.seed", lo=0, hi=2**63 - 1),
        max_steps=payload.get_int("fit.max_steps", lo=0, hi=10**9),
        learning_rate=payload.get_float("fit.learning_rate", lo=0.0, hi=1e6),
        momentum=payload.get_float("fit.momentum", lo=0.0, hi=1.0),
        weight_decay=payload.get_float("fit.weight_decay", lo=0.0, hi=1e6),
        proximal_mu=payload.get_float("fit.proximal_mu", lo=0.0, hi=1e6),
        optimizer=payload.get_str("fit.optimizer", allowed=("sgd", "adam")),
    )


def weighted_mean(
    updates: Mapping[str, FloatVector], weights: Mapping[str, float]
) -> tuple[FloatVector, float]:
    """Example-weighted mean of ``updates``, summed in sorted client order (deterministic).

    The sum is accumulated in float64 and rounded to float32 once.
    """
    if not updates:
        raise ValueError("no updates to average")
    total = float(sum(weights[c] for c in updates))
    if total <= 0:
        raise ValueError("the weights of the updates sum to zero")
    clients = sorted(updates)
    factors = [weights[c] / total for c in clients]
    vectors = [updates[c] for c in clients]
    size = vectors[0].shape[0]
    out = np.empty(size, dtype=np.float32)
    acc = np.empty(min(size, _BLOCK), dtype=np.float64)
    term = np.empty_like(acc)
    # Block by block, so that the float64 accumulator stays in cache while every update streams
    # through once; each element still gets the same operations in the same (client) order.
    for start in range(0, size, _BLOCK):
        stop = min(start + _BLOCK, size)
        a, t = acc[: stop - start], term[: stop - start]
        a[...] = vectors[0][start:stop]
        a *= factors[0]
        for vector, factor in zip(vectors[1:], factors[1:], strict=True):
            t[...] = vector[start:stop]
            t *= factor
            a += t
        out[start:stop] = a
    return out, total


_BLOCK = 1 << 17
"""Elements per block of `weighted_mean` (1 MiB of float64 accumulator, 2.3x to 3.5x faster than
whole-vector temporaries for 10 updates of 1e7 parameters)."""


def weighted_metrics(per_client: Mapping[str, Metrics], weights: Mapping[str, float]) -> Metrics:
    """Weighted means of the metrics every client reported."""
    if not per_client:
        return {}
    names = set.intersection(*(set(m) for m in per_client.values()))
    total = float(sum(weights[c] for c in per_client))
    return {
        name: float(sum(per_client[c][name] * weights[c] for c in sorted(per_client)) / total)
        for name in sorted(names)
    }
