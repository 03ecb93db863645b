"""Federated evaluation: every sampled client scores the new global model on its own test data.

One stage, ``evaluate``. The coordinator reports the example-weighted mean of loss and metrics;
when the test set is split among the clients without overlap (as the simulation does), this equals
the metrics on the whole test set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ..errors import CodecError, RoundAborted
from ..payload import Payload
from ..types import EvaluateResult, Metrics
from .base import FloatVector, weighted_metrics
from .mean import MAX_EXAMPLES, metrics_from_payload, metrics_to_fields, quorum_of

STAGE_EVALUATE = "evaluate"


class EvaluateServerRound:
    """Coordinator side: send the model, collect losses and metrics."""

    stages: tuple[str, ...] = (STAGE_EVALUATE,)

    def __init__(
        self, weights: FloatVector, *, round: int, quorum_fraction: float, min_clients: int
    ) -> None:
        self._task = Payload({"weights": weights, "round": round})
        self._dim = int(weights.shape[0])
        self._quorum_fraction = quorum_fraction
        self._min_clients = min_clients
        self._results: dict[str, tuple[int, Metrics]] = {}

    def tasks(self, stage: str, alive: Sequence[str]) -> dict[str, Payload]:
        """The same model for every client."""
        return {client: self._task for client in alive}

    def quorum(self, stage: str, sent: int) -> int:
        """The job's quorum fraction of the cohort, at least its minimum."""
        return quorum_of(sent, self._quorum_fraction, self._min_clients)

    def check(self, stage: str, client_id: str, payload: Payload) -> object:
        """A positive example count, a finite loss and finite metrics."""
        examples = payload.get_int("num_examples", lo=1, hi=MAX_EXAMPLES)
        metrics = metrics_from_payload(payload)
        metrics["loss"] = payload.get_float("loss")
        return examples, metrics

    def collect(self, stage: str, results: Mapping[str, object], dropped: Sequence[str]) -> None:
        """Keep the accepted results."""
        for client, value in results.items():
            self._results[client] = value  # type: ignore[assignment]
        if not self._results:
            raise RoundAborted(stage=stage, reason="no client returned an evaluation")

    def finish(self) -> tuple[Metrics, int, dict[str, Metrics]]:
        """Weighted mean metrics, total examples, and each client's metrics."""
        weights = {c: float(r[0]) for c, r in self._results.items()}
        per_client = {c: r[1] for c, r in self._results.items()}
        return weighted_metrics(per_client, weights), int(sum(weights.values())), per_client


def handle_evaluate(
    payload: Payload, *, dim: int, evaluate: Callable[[FloatVector], EvaluateResult]
) -> Payload:
    """Client side: evaluate the task's model on local test data."""
    weights = payload.get_tensor("weights", dtype="float32", shape=(dim,), finite=True)
    result = evaluate(weights)  # type: ignore[arg-type]
    if result.num_examples < 1:
        raise CodecError("this client has no evaluation data")
    return Payload(
        {
            "num_examples": int(result.num_examples),
            "loss": float(result.loss),
            **metrics_to_fields(result.metrics),
        }
    )
