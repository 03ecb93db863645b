"""Poisson sampling that matches the accountants (clients per round, examples per batch).

The RDP and PLD analyses of the subsampled Gaussian (and the Zhu-Wang bound used for Skellam)
assume Poisson sampling: each unit is included independently with probability q, so the batch or
cohort size is random. Shuffled fixed-size batches analysed "as if Poisson" can understate epsilon
(Chua et al., ICML 2024; Annamalai et al., arXiv 2411.10614). A job claims amplification by client
sampling only when it samples clients with :func:`poisson_sample`; otherwise every round a client
takes part in is accounted with sample rate 1.

Both functions take the random generator as an argument (:func:`fl_core.dp.noise.csprng` in
production, so that an observer of earlier rounds cannot predict who is sampled next).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from fl_core.errors import ConfigError

T = TypeVar("T")


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
        raise ConfigError(f"rate must be a number in [0, 1], got {rate!r}")
    if not 0 <= rate <= 1:
        raise ConfigError(f"rate must be a number in [0, 1], got {rate}")
    return float(rate)


def poisson_indices(
    population: int, *, rate: float, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Return the sorted indices in ``range(population)`` kept by independent coin flips.

    Args:
        population: number of units (>= 0).
        rate: inclusion probability q of each unit.
        rng: the random generator.

    Returns:
        An int64 vector of the selected indices (possibly empty).

    Raises:
        ConfigError: if ``population`` < 0 or ``rate`` is outside [0, 1].
    """
    if isinstance(population, bool) or not isinstance(population, int) or population < 0:
        raise ConfigError(f"population must be an integer >= 0, got {population!r}")
    q = _check_rate(rate)
    if q == 1.0:
        return np.arange(population, dtype=np.int64)
    keep = rng.random(population) < q
    return np.flatnonzero(keep).astype(np.int64)


def poisson_sample(population: Sequence[T], *, rate: float, rng: np.random.Generator) -> list[T]:
    """Return the members of ``population`` kept by independent coin flips of probability ``rate``.

    The order of ``population`` is kept. The result may be empty; a round that needs a minimum
    cohort must then skip (and still count) the round rather than resample, or the sampling would
    no longer be Poisson.
    """
    idx = poisson_indices(len(population), rate=rate, rng=rng)
    return [population[int(i)] for i in idx]
