"""Aggregators: plain mean, secure aggregation, HE sum; coordinator and client sides."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..client.pipeline import local_update
from ..client.policy import OwnerPolicy
from ..client.release import Releases
from ..client.training import owner_fit
from ..config import JobConfig
from ..dp.noise import csprng
from ..dp.owner import OwnerPrivacy
from ..dp.plan import CentralNoiseAggregator, check_plan
from ..errors import ConfigError
from ..federation import Roster
from ..types import FitConfig, Layout, Metrics, Trainer
from .base import (
    AggregateUpdate,
    Aggregator,
    ClientRound,
    FloatVector,
    RoundContext,
    ServerRound,
    model_hash,
)
from .evaluation import EvaluateServerRound, handle_evaluate
from .mean import MeanClientRound, MeanServerRound
from .secure_sum import SecureSumAggregator, SecureSumClientRound
from .secure_sum import check_job as check_secagg_job

__all__ = [
    "AggregateUpdate",
    "Aggregator",
    "ClientContext",
    "ClientRound",
    "EvaluateServerRound",
    "MeanAggregator",
    "SecureSumAggregator",
    "RoundContext",
    "ServerRound",
    "create_aggregator",
    "create_client_round",
    "handle_evaluate",
    "model_hash",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientContext:
    """What a data owner's side of any aggregator may use."""

    client_id: str
    job: JobConfig
    trainer: Trainer
    layout: Layout
    identity_key: Ed25519PrivateKey = field(repr=False)
    policy: OwnerPolicy
    releases: Releases
    privacy: OwnerPrivacy | None = None
    roster: Roster | None = None
    """With a roster, secure-aggregation peers must be roster owners under their roster keys."""

    def raw_update(
        self, global_weights: FloatVector, fit: FitConfig
    ) -> tuple[FloatVector, int, Metrics]:
        """Train from ``global_weights``; return (update, examples, metrics), nothing added."""
        return local_update(
            self.trainer,
            self.layout,
            client_id=self.client_id,
            global_weights=global_weights,
            fit=fit,
        )

    def local_update(
        self, global_weights: FloatVector, fit: FitConfig
    ) -> tuple[FloatVector, int, Metrics]:
        """The update this owner may release, after its DP steps and its ledger charge.

        Without DP it is the raw update; with DP, :meth:`OwnerPrivacy.release` decides.
        """
        if self.privacy is None:
            return self.raw_update(global_weights, fit)
        return self.privacy.release(
            self.trainer, raw_update=self.raw_update, global_weights=global_weights, fit=fit
        )


class MeanAggregator:
    """The plain weighted mean (updates in the clear)."""

    name = "mean"

    def __init__(
        self, *, quorum_fraction: float, min_clients: int, max_update_norm: float = 0.0
    ) -> None:
        self.quorum_fraction = quorum_fraction
        self.min_clients = min_clients
        self.max_update_norm = max_update_norm

    def server_round(self, ctx: RoundContext) -> ServerRound:
        """A plain-mean round."""
        return MeanServerRound(
            ctx,
            quorum_fraction=self.quorum_fraction,
            min_clients=self.min_clients,
            max_update_norm=self.max_update_norm,
        )


def _mean(job: JobConfig) -> Aggregator:
    return MeanAggregator(
        quorum_fraction=job.round.quorum_fraction,
        min_clients=1,
        max_update_norm=job.limits.max_update_norm,
    )


def _secure_sum(job: JobConfig) -> Aggregator:
    check_secagg_job(job)
    return SecureSumAggregator(job.secagg, quorum_fraction=job.round.quorum_fraction, job=job)


def _he_sum(job: JobConfig) -> Aggregator:
    from .he_sum import HESumAggregator  # imports TenSEAL: only for HE jobs

    return HESumAggregator(job)


def _mean_client(ctx: ClientContext, round: int, attempt: int) -> ClientRound:
    privacy = ctx.privacy
    central = privacy is not None and privacy.plan.mode == "central"
    check = functools.partial(check_plan, privacy.plan) if privacy and central else None
    return MeanClientRound(
        dim=ctx.layout.total,
        local_update=ctx.local_update,
        fit_of=functools.partial(owner_fit, ctx.job, round=round),
        check=check,
        before_release=lambda weights: ctx.releases.release(
            round=round, attempt=attempt, model_hash=model_hash(weights), once=False
        ),
    )


def _secure_sum_client(ctx: ClientContext, round: int, attempt: int) -> ClientRound:
    return SecureSumClientRound(ctx, round=round, attempt=attempt, rng=csprng())


def _he_sum_client(ctx: ClientContext, round: int, attempt: int) -> ClientRound:
    from .he_sum import HESumClientRound  # imports TenSEAL: only for HE jobs

    return HESumClientRound(ctx, round=round, attempt=attempt)


AGGREGATORS: dict[str, Callable[[JobConfig], Aggregator]] = {
    "mean": _mean,
    "secagg": _secure_sum,
    "he": _he_sum,
}
"""``aggregation.kind`` -> the coordinator side (the sum whose inverse the owner's chain is)."""

CLIENT_ROUNDS: dict[str, Callable[[ClientContext, int, int], ClientRound]] = {
    "mean": _mean_client,
    "secagg": _secure_sum_client,
    "he": _he_sum_client,
}
"""``aggregation.kind`` -> the owner side of one round attempt."""

CENTRAL_NOISE_AROUND = ("mean", "secagg")
"""Aggregators that central DP (``dp.mode = "central"``) wraps with its noise."""


def create_aggregator(job: JobConfig) -> Aggregator:
    """The coordinator-side aggregator that the job's ``[aggregation]`` table names."""
    kind = job.aggregation.kind
    if kind not in AGGREGATORS:
        raise ConfigError(f"aggregation.kind = {kind!r} is not available in this build")
    base = AGGREGATORS[kind](job)
    if job.dp.mode == "central" and kind in CENTRAL_NOISE_AROUND:
        return CentralNoiseAggregator(base, job)
    return base


def create_client_round(ctx: ClientContext, *, round: int, attempt: int) -> ClientRound:
    """A fresh client-side state machine for one round attempt of the job's aggregator."""
    kind = ctx.job.aggregation.kind
    if kind not in CLIENT_ROUNDS:
        raise ConfigError(f"aggregation.kind = {kind!r} is not available in this build")
    return CLIENT_ROUNDS[kind](ctx, round, attempt)
