"""The plain weighted mean: each client sends its update in the clear (the baseline, no protection).

One stage, ``fit``: the task carries the global model and the training instructions; the result
carries the update (new local weights minus global), the number of local examples and training
metrics. The coordinator averages the updates weighted by examples (FedAvg's weighting).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..errors import CodecError, RoundAborted
from ..payload import Payload
from ..types import FitConfig, Metrics
from .base import (
    AggregateUpdate,
    FloatVector,
    RoundContext,
    fit_to_fields,
    weighted_mean,
    weighted_metrics,
)

STAGE_FIT = "fit"
MAX_METRICS = 32
MAX_EXAMPLES = 10**9


def metrics_to_fields(metrics: Metrics) -> dict[str, object]:
    """``metrics.<name>`` fields for a result."""
    return {f"metrics.{k}": float(v) for k, v in metrics.items() if math.isfinite(float(v))}


def metrics_from_payload(payload: Payload) -> Metrics:
    """Read ``metrics.<name>`` fields: finite floats, at most MAX_METRICS of them."""
    names = [k for k in payload if k.startswith("metrics.")]
    if len(names) > MAX_METRICS:
        raise CodecError(f"{len(names)} metrics, at most {MAX_METRICS} allowed")
    return {k[len("metrics.") :]: payload.get_float(k) for k in names}


def quorum_of(sent: int, fraction: float, minimum: int) -> int:
    """``max(minimum, ceil(fraction * sent))``, never more than ``sent``."""
    return min(sent, max(minimum, math.ceil(fraction * sent)))


class MeanServerRound:
    """Coordinator side of a plain weighted-mean round."""

    stages: tuple[str, ...] = (STAGE_FIT,)

    def __init__(
        self,
        ctx: RoundContext,
        *,
        quorum_fraction: float,
        min_clients: int,
        max_update_norm: float = 0.0,
    ) -> None:
        self._ctx = ctx
        self._max_norm = max_update_norm
        self._quorum_fraction = quorum_fraction
        self._min_clients = min_clients
        self._dim = int(ctx.global_weights.shape[0])
        self._task = Payload({"weights": ctx.global_weights, **fit_to_fields(ctx.fit)})
        self._results: dict[str, tuple[FloatVector, int, Metrics]] = {}

    def tasks(self, stage: str, alive: Sequence[str]) -> dict[str, Payload]:
        """The same task (global model and instructions) for every client."""
        return {client: self._task for client in alive}

    def quorum(self, stage: str, sent: int) -> int:
        """The job's quorum fraction of the cohort, at least its minimum."""
        return quorum_of(sent, self._quorum_fraction, self._min_clients)

    def check(self, stage: str, client_id: str, payload: Payload) -> object:
        """An update of the model's size, finite, with a positive example count."""
        update = payload.get_tensor("update", dtype="float32", shape=(self._dim,), finite=True)
        if self._max_norm:
            norm = float(np.linalg.norm(np.asarray(update, dtype=np.float64)))
            if norm > self._max_norm:
                raise CodecError(
                    f"update norm {norm:.6g} exceeds limits.max_update_norm = {self._max_norm:g}"
                )
        examples = payload.get_int("num_examples", lo=1, hi=MAX_EXAMPLES)
        return update, examples, metrics_from_payload(payload)

    def collect(self, stage: str, results: Mapping[str, object], dropped: Sequence[str]) -> None:
        """Keep the accepted updates."""
        for client, value in results.items():
            self._results[client] = value  # type: ignore[assignment]
        if not self._results:
            raise RoundAborted(stage=stage, reason="no client returned an update")

    def finish(self) -> AggregateUpdate:
        """Example-weighted mean of the updates."""
        updates = {c: r[0] for c, r in self._results.items()}
        weights = {c: float(r[1]) for c, r in self._results.items()}
        client_metrics = {c: r[2] for c, r in self._results.items()}
        mean, total = weighted_mean(updates, weights)
        return AggregateUpdate(
            mean_update=mean,
            contributors=tuple(sorted(updates)),
            total_weight=total,
            metrics=weighted_metrics(client_metrics, weights),
            client_metrics=client_metrics,
        )


LocalUpdateFn = Callable[[FloatVector, FitConfig], tuple[FloatVector, int, Metrics]]
"""Train from a flat global model; return (update, number of examples, metrics)."""


class MeanClientRound:
    """Data-owner side of a plain weighted-mean round: train, send the update."""

    def __init__(
        self,
        *,
        dim: int,
        local_update: LocalUpdateFn,
        fit_of: Callable[[Payload], FitConfig],
        check: Callable[[Payload], None] | None = None,
        before_release: Callable[[FloatVector], None] | None = None,
    ) -> None:
        self._before_release = before_release
        self._dim = dim
        self._fit_of = fit_of
        self._local_update = local_update
        self._check = check

    def handle(self, stage: str, payload: Payload) -> Payload:
        """Train on the task's global model and return the update."""
        if stage != STAGE_FIT:
            raise CodecError(f"stage {stage!r} is not part of a plain-mean round")
        weights = payload.get_tensor("weights", dtype="float32", shape=(self._dim,), finite=True)
        fit = self._fit_of(payload)
        if self._check is not None:
            self._check(payload)  # e.g. the DP plan: no less noise than the job agreed to
        if self._before_release is not None:
            self._before_release(np.asarray(weights))  # counted before anything is computed
        update, examples, metrics = self._local_update(np.asarray(weights), fit)
        return Payload(
            {"update": update, "num_examples": int(examples), **metrics_to_fields(metrics)}
        )
