"""Privacy-loss-distribution (PLD) accounting through Google's ``dp_accounting``, pessimistic only.

A PLD accountant composes the exact privacy-loss distributions of the mechanisms instead of a
bound on their moments, so its epsilon is the tightest known for a composition of subsampled
Gaussians (Koskela, Jalko, Honkela, AISTATS 2020; Doroshenko, Ghazi, Kamath, Kumar, Manurangsi,
"Connect the Dots: Tighter Discrete Approximations of Privacy Loss Distributions", PETS 2022).
``dp_accounting`` discretizes each distribution on a grid of privacy-loss values with step
``interval``. With ``pessimistic_estimate=True`` every discretization (connect-the-dots included)
*dominates* the true distribution, the truncated tails are moved to the privacy loss +inf (they
add to delta), and composition preserves domination (Doroshenko et al., sections 3-4), so the
epsilon read off the discretized composition is an upper bound on the true one at every grid.

The grid is chosen here. A coarse grid is fast but loose; a fine one is tight but slow (the
composition is an FFT over ``steps * range / interval`` points). :func:`pld_epsilon` starts from
a grid whose step is about epsilon / 512 (epsilon from the RDP bound, which is above the PLD's)
and halves the step until two successive epsilons differ by at most ``rel_tol`` (0.3%) of the
smaller; the discretization error then falls about fourfold per halving, so the answer is within
about 0.1% of the limit. Every grid step is a power of two, and each grid's epsilon is an upper
bound, so the smallest one evaluated is returned (the tests check it against a much finer grid:
never below it, and within 1%).

Notes:
    Neighbouring relation: add or remove one unit (``dp_accounting``'s ``ADD_OR_REMOVE_ONE``,
    the default): the PLD of each mechanism holds both directions and epsilon is the larger.
    ``dp_accounting`` is imported on first use, so that importing :mod:`fl_core.dp` stays light.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Final

MIN_LOG2_INTERVAL: Final = -22
"""Finest grid ever used: 2^-22 (only for epsilons around 1e-3 and below, whose PLDs are narrow)."""
MAX_REFINEMENTS: Final = 5
"""At most this many halvings after the first grid: the finest step is about epsilon / 2^14."""
MAX_LOG2_INTERVAL: Final = -4
"""Coarsest grid used: 2^-4 = 0.0625 (only for epsilons in the hundreds)."""
LOG_MASS_TRUNCATION: Final = -40.0
"""Each step's PLD drops tails of mass below e^-40 (4.2e-18) on each side and counts them as an
infinite privacy loss (pessimistic: over 5,000 steps they add at most 5,000 x 8.5e-18 = 4e-14 to
delta). dp_accounting's default is -50; -40 builds each grid about 20% faster."""
DEFAULT_REL_TOL: Final = 3e-3
"""Stop refining when two successive grids' epsilons differ by at most this fraction."""

GaussianHistory = tuple[tuple[float, float, int], ...]
"""``(noise_multiplier, sample_rate, steps)`` per distinct Gaussian mechanism, steps >= 1."""

PldFactory = Callable[[float], Any]
"""Given a grid step, returns the ``dp_accounting`` PLD of one composed block of a history."""


def gaussian_block(noise_multiplier: float, sample_rate: float, steps: int) -> PldFactory:
    """The factory of ``steps`` self-compositions of the Poisson-subsampled Gaussian mechanism."""

    def build(interval: float) -> Any:
        from dp_accounting.pld import privacy_loss_distribution as pld

        one = pld.from_gaussian_mechanism(
            noise_multiplier,
            sensitivity=1.0,
            pessimistic_estimate=True,
            value_discretization_interval=interval,
            sampling_prob=sample_rate,
            use_connect_dots=True,
            log_mass_truncation_bound=LOG_MASS_TRUNCATION,
        )
        return one.self_compose(steps) if steps > 1 else one

    return build


def epsilon_on_grid(blocks: Sequence[PldFactory], *, delta: float, log2_interval: int) -> float:
    """Epsilon at ``delta`` of the composition of ``blocks`` on the grid of step 2^log2_interval."""
    interval = 2.0**log2_interval
    total = None
    for block in blocks:
        pld = block(interval)
        total = pld if total is None else total.compose(pld)
    if total is None:
        return 0.0
    return max(0.0, float(total.get_epsilon_for_delta(delta)))


def start_log2_interval(upper_epsilon: float) -> int:
    """The first grid: a step of about ``upper_epsilon / 512``, clamped to the allowed range."""
    if not math.isfinite(upper_epsilon) or upper_epsilon <= 0:
        return MAX_LOG2_INTERVAL
    k = math.floor(math.log2(upper_epsilon / 512.0))
    return max(MIN_LOG2_INTERVAL, min(MAX_LOG2_INTERVAL, k))


def adaptive_epsilon(
    blocks: Sequence[PldFactory],
    *,
    delta: float,
    upper_epsilon: float,
    rel_tol: float = DEFAULT_REL_TOL,
) -> float:
    """Epsilon of the composition, refining the grid until it converges (see the module notes).

    Args:
        blocks: the composed blocks of the history (one per distinct mechanism).
        delta: the delta.
        upper_epsilon: an upper bound on the answer (the RDP epsilon) that sets the first grid.
        rel_tol: stop when two successive grids differ by at most this fraction.

    Returns:
        The epsilon of the finest grid evaluated: an upper bound on the true epsilon.
    """
    if not blocks:
        return 0.0
    k = start_log2_interval(upper_epsilon)
    finest = max(MIN_LOG2_INTERVAL, k - MAX_REFINEMENTS)
    eps = epsilon_on_grid(blocks, delta=delta, log2_interval=k)
    while k > finest and math.isfinite(eps):
        k -= 1
        finer = epsilon_on_grid(blocks, delta=delta, log2_interval=k)
        converged = eps - finer <= rel_tol * finer
        eps = min(eps, finer)  # both are upper bounds
        if converged:
            break
    return eps


@functools.lru_cache(maxsize=512)
def gaussian_history_epsilon(history: GaussianHistory, delta: float, upper_epsilon: float) -> float:
    """Epsilon of a Gaussian history by PLD, cached: ledgers recompose the same histories."""
    blocks = [gaussian_block(z, q, steps) for z, q, steps in history]
    return adaptive_epsilon(blocks, delta=delta, upper_epsilon=upper_epsilon)
