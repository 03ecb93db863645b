"""Aggregators: plain mean, secure aggregation, HE sum; coordinator and client sides."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..client.pipeline import local_update
from ..client.policy import OwnerPolicy
from ..client.privacy import OwnerPrivacy
from ..config import JobConfig
from ..dp.clipping import clip_update
from ..dp.noise import csprng
from ..errors import ConfigError
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
from .dp import CentralNoiseAggregator, check_plan
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
    privacy: OwnerPrivacy | None = None

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

        Without DP it is the raw update. With ``dpsgd`` the round's event is charged before
        training; with ``central`` the update is clipped and charged. In DP modes the example
        count is not released (it is data too): the update is sent with weight 1.
        """
        plan = self.privacy.plan if self.privacy is not None else None
        if plan is None or self.privacy is None:
            return self.raw_update(global_weights, fit)
        if plan.mode == "dpsgd":
            next_event = getattr(self.trainer, "next_round_event", None)
            if next_event is None:
                raise ConfigError("dp.mode = 'dpsgd' needs a DP-SGD trainer at the owner")
            epsilon = self.privacy.charge(round=fit.round, event=next_event())
            update, _, metrics = self.raw_update(global_weights, fit)
            return update, 1, {**metrics, "epsilon": epsilon}
        if plan.mode == "central":
            update, _, metrics = self.raw_update(global_weights, fit)
            clipped, norm = clip_update(update, clip=plan.clip)
            epsilon = self.privacy.charge(round=fit.round, event=plan.owner_event())
            return clipped, 1, {**metrics, "epsilon": epsilon, "update_norm": norm}
        raise ConfigError(f"dp.mode = {plan.mode!r} is encoded by secure aggregation itself")


class MeanAggregator:
    """The plain weighted mean (updates in the clear)."""

    name = "mean"

    def __init__(self, *, quorum_fraction: float, min_clients: int) -> None:
        self.quorum_fraction = quorum_fraction
        self.min_clients = min_clients

    def server_round(self, ctx: RoundContext) -> ServerRound:
        """A plain-mean round."""
        return MeanServerRound(
            ctx, quorum_fraction=self.quorum_fraction, min_clients=self.min_clients
        )


def create_aggregator(job: JobConfig) -> Aggregator:
    """The coordinator-side aggregator that the job's ``[aggregation]`` table names."""
    kind = job.aggregation.kind
    base: Aggregator
    if kind == "mean":
        base = MeanAggregator(quorum_fraction=job.round.quorum_fraction, min_clients=1)
    elif kind == "secagg":
        check_secagg_job(job)
        base = SecureSumAggregator(job.secagg, quorum_fraction=job.round.quorum_fraction, job=job)
    if kind in ("mean", "secagg"):
        return CentralNoiseAggregator(base, job) if job.dp.mode == "central" else base
    if kind == "he":
        from .he_sum import HESumAggregator  # imports TenSEAL: only for HE jobs

        return HESumAggregator(job)
    raise ConfigError(f"aggregation.kind = {kind!r} is not available in this build")


def create_client_round(ctx: ClientContext, *, round: int, attempt: int) -> ClientRound:
    """A fresh client-side state machine for one round attempt of the job's aggregator."""
    kind = ctx.job.aggregation.kind
    if kind == "mean":
        privacy = ctx.privacy
        central = privacy is not None and privacy.plan.mode == "central"
        check = functools.partial(check_plan, privacy.plan) if privacy and central else None
        return MeanClientRound(dim=ctx.layout.total, local_update=ctx.local_update, check=check)
    if kind == "secagg":
        return SecureSumClientRound(ctx, rng=csprng())
    if kind == "he":
        from .he_sum import HESumClientRound  # imports TenSEAL: only for HE jobs

        return HESumClientRound(ctx, round=round)
    raise ConfigError(f"aggregation.kind = {kind!r} is not available in this build")
