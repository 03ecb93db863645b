"""The data owner's steps for one round, in the order of the DESIGN diagram.

``local data -> train -> update = new - global`` here; the protective steps that follow (clip,
quantize, noise, mask) belong to the aggregator's client side and to :mod:`fl_core.dp`, and run
on what :func:`local_update` returns.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import numpy.typing as npt

from ..errors import FlCoreError
from ..types import FitConfig, Layout, Metrics, Trainer

FloatVector = npt.NDArray[np.float32]


class LocalTrainingFailed(FlCoreError):
    """Local training produced something that must not be sent (NaN or Inf weights)."""


def client_seed(round_seed: int, client_id: str) -> int:
    """Mix the round's seed with the client's id, so that clients shuffle differently."""
    digest = hashlib.sha256(f"{round_seed}:{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def local_update(
    trainer: Trainer,
    layout: Layout,
    *,
    client_id: str,
    global_weights: FloatVector,
    fit: FitConfig,
) -> tuple[FloatVector, int, Metrics]:
    """Train from the round's global model and return ``(new - global, examples, metrics)``.

    Raises:
        LocalTrainingFailed: the new weights are not finite (nothing may be sent then).
    """
    config = dataclasses.replace(fit, seed=client_seed(fit.seed, client_id))
    start = layout.unflatten(np.array(global_weights, dtype=np.float32, copy=True))
    result = trainer.fit(start, config)
    new = layout.flatten(result.weights)
    update = (new - global_weights).astype(np.float32)
    if not bool(np.isfinite(update).all()):
        raise LocalTrainingFailed("local training diverged: the update has NaN or Inf entries")
    return update, int(result.num_examples), dict(result.metrics)
