"""The local training settings of a round, as the owner computes them from its own job file.

The coordinator states the settings in each task (``fit.*`` fields); the owner never takes them
from there. :func:`job_fit` is the one definition both sides use; :func:`owner_fit` reads the
task's claim, checks it field by field against the owner's own :func:`job_fit`, and refuses a task
that differs, naming the field. A coordinator therefore cannot raise the learning rate, the
epochs or the steps, or shrink the batch, of an owner's training (each of which changes what an
update reveals about single records, and what DP-SGD spends).

The per-round data-order seed is recomputed from ``job.seed`` when the job pins one; otherwise
the coordinator's seed is taken as it is (it only orders the owner's own batches).
"""

from __future__ import annotations

import math

import numpy as np

from ..aggregators.base import fit_from_payload
from ..config import JobConfig
from ..errors import PolicyRefused
from ..payload import Payload
from ..types import FitConfig

FIELDS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "momentum",
    "weight_decay",
    "optimizer",
    "proximal_mu",
    "max_steps",
    "seed",
)


def round_seed(job: JobConfig, round: int, *, fallback: int) -> int:
    """The data-order seed of ``round``: from the job's seed when it has one."""
    if job.job.seed is None:
        return fallback
    return int(np.random.default_rng([job.job.seed, round]).integers(0, 2**62))


def job_fit(job: JobConfig, round: int, *, seed: int) -> FitConfig:
    """The round's local-training settings, from the job file alone (``seed`` if unpinned)."""
    strategy = job.strategy
    return FitConfig(
        round=round,
        epochs=job.train.epochs,
        batch_size=job.train.batch_size,
        learning_rate=job.train.learning_rate,
        momentum=job.train.momentum,
        weight_decay=job.train.weight_decay,
        optimizer=job.train.optimizer,
        max_steps=job.train.max_steps,
        proximal_mu=strategy.proximal_mu if strategy.name == "fedprox" else 0.0,
        seed=round_seed(job, round, fallback=seed),
    )


def owner_fit(job: JobConfig, payload: Payload, *, round: int) -> FitConfig:
    """The owner's own settings for the task's round, once the task's claim matches them.

    Raises:
        PolicyRefused: a ``fit.*`` field of the task differs from the job file (named).
        CodecError: a field is missing or out of range.
    """
    claimed = fit_from_payload(payload)
    if claimed.round != round:
        raise PolicyRefused(f"the task of round {round} asks for fit.round = {claimed.round}")
    own = job_fit(job, claimed.round, seed=claimed.seed)
    for name in FIELDS:
        got, want = getattr(claimed, name), getattr(own, name)
        same = got == want if isinstance(want, str | int) else math.isclose(got, want)
        if not same:
            raise PolicyRefused(
                f"the task asks for fit.{name} = {got!r}; the job file says {want!r}"
            )
    return own
