"""Domain types shared by the coordinator, the clients and the transports.

Weights are an ordered mapping from parameter name to a float32 numpy array (the same order as
``model.state_dict()``). Updates are the difference of two ``Weights`` with the same layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NewType, Protocol

import numpy as np
import numpy.typing as npt

ClientId = NewType("ClientId", str)
"""A client's identity within one job: the data owner's name as enrolled (e.g. ``hospital-3``)."""

Weights = dict[str, npt.NDArray[np.float32]]
"""Named float32 arrays in model order."""

FloatUpdate = NewType("FloatUpdate", "npt.NDArray[np.float32]")
"""A flat float32 vector: new local weights minus the round's global weights."""

Metrics = dict[str, float]


@dataclass(frozen=True, slots=True)
class Layout:
    """Names and shapes of a model's parameters, in order; flattens and restores ``Weights``."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, weights: Mapping[str, npt.NDArray[np.float32]]) -> Layout:
        """Return the layout of ``weights``."""
        return cls(
            names=tuple(weights),
            shapes=tuple(tuple(int(d) for d in a.shape) for a in weights.values()),
        )

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of elements of each parameter."""
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def total(self) -> int:
        """Number of elements of all parameters together."""
        return sum(self.sizes)

    def flatten(self, weights: Mapping[str, npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        """Concatenate ``weights`` (which must have this layout) into one float32 vector."""
        out = np.empty(self.total, dtype=np.float32)
        offset = 0
        for name, size in zip(self.names, self.sizes, strict=True):
            out[offset : offset + size] = np.asarray(weights[name], dtype=np.float32).reshape(-1)
            offset += size
        return out

    def unflatten(self, vector: npt.NDArray[np.float32]) -> Weights:
        """Split a flat vector back into named arrays (views into ``vector``)."""
        if vector.shape != (self.total,):
            raise ValueError(f"vector has shape {vector.shape}, layout needs ({self.total},)")
        out: Weights = {}
        offset = 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes, strict=True):
            out[name] = vector[offset : offset + size].reshape(shape)
            offset += size
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class FitConfig:
    """What the coordinator asks of one client's local training in one round.

    Attributes:
        round: the round number (1-based).
        epochs: local epochs over the client's training data.
        batch_size: examples per local step.
        learning_rate: local optimizer step size.
        momentum: SGD momentum (0 for none).
        weight_decay: L2 penalty of the local optimizer.
        optimizer: ``"sgd"`` or ``"adam"``.
        proximal_mu: FedProx's proximal coefficient; 0 is plain local training.
        seed: seeds the client's data order and dropout for this round (reproducible runs).
        max_steps: stop after this many local steps (0 means no limit).
    """

    round: int
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    proximal_mu: float = 0.0
    seed: int = 0
    max_steps: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class FitResult:
    """What local training produced: the new local weights, not yet an update."""

    weights: Weights
    num_examples: int
    metrics: Metrics = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluateResult:
    """Loss and metrics of a model on a client's local evaluation data."""

    num_examples: int
    loss: float
    metrics: Metrics = field(default_factory=dict)


class Trainer(Protocol):
    """A data owner's local computation: what a client needs to take part in training.

    Implement it yourself, or use :class:`fl_core.TorchTrainer` with a torch model and local data.
    """

    def initial_weights(self) -> Weights:
        """Return the model's initial weights (used by the coordinator to start a job)."""
        ...

    def fit(self, weights: Weights, config: FitConfig) -> FitResult:
        """Train locally starting from ``weights`` and return the new weights."""
        ...

    def evaluate(self, weights: Weights) -> EvaluateResult:
        """Evaluate ``weights`` on local held-out data."""
        ...
