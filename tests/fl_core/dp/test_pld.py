"""The PLD accountant against dp_accounting at a fine grid and against exact epsilons."""

from __future__ import annotations

import math

import dp_accounting as dpa
import pytest
from dp_accounting import pld
from scipy import optimize, stats

from fl_core.dp import _pld
from fl_core.dp.accounting import (
    GaussianEvent,
    compose,
    epsilon_pld,
    epsilon_rdp,
    noise_multiplier_for,
)


def _fine(upper: float) -> float:
    """The reference grid: a step of upper / 2^16, four times finer than the accountant's finest."""
    return 2.0 ** math.floor(math.log2(upper / 2.0**16))


# (sigma, q, steps, delta): small and large epsilons, tiny and large q, q = 1, several deltas.
GRID = [
    (1.0, 0.01, 2000, 1e-5),
    (0.8, 0.001, 2000, 1e-5),
    (1.5, 0.04, 500, 1e-5),
    (2.0, 0.05, 300, 1e-6),
    (1.0, 1.0, 10, 1e-5),
    (5.0, 0.2, 200, 1e-7),
    (0.7, 0.5, 100, 1e-5),
    (4.0, 0.01, 1000, 1e-3),
    (20.0, 0.001, 1000, 1e-5),
]


def _reference(history: list[tuple[float, float, int]], delta: float, interval: float) -> float:
    """dp_accounting's PLDAccountant (its DpEvent path, not ours) on a grid of step ``interval``."""
    accountant = pld.PLDAccountant(value_discretization_interval=interval)
    for sigma, q, steps in history:
        inner = dpa.GaussianDpEvent(sigma)
        event = inner if q == 1.0 else dpa.PoissonSampledDpEvent(q, inner)
        accountant.compose(dpa.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), GRID)
def test_within_one_percent_of_a_fine_grid_and_never_below(
    sigma: float, q: float, steps: int, delta: float
) -> None:
    # Prepare
    event = GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)
    reference = _reference([(sigma, q, steps)], delta, _fine(epsilon_rdp([event], delta=delta)))
    # Execute
    ours = epsilon_pld([event], delta=delta)
    # Assert
    assert math.isfinite(ours)
    assert reference <= ours <= reference * 1.01


def _exact_one_step_delta(sigma: float, q: float, eps: float) -> float:
    """Exact delta(eps) of one Poisson-subsampled Gaussian step, both directions (add/remove).

    P = (1 - q) N(0, s^2) + q N(1, s^2), Q = N(0, s^2). The likelihood ratio P/Q is increasing in
    x, so each hockey-stick divergence is a difference of normal tails at one threshold.
    """
    norm = stats.norm

    def remove(x: float) -> float:  # H_eps(P || Q) over {x > x*}
        p_tail = (1 - q) * norm.sf(x, scale=sigma) + q * norm.sf(x, loc=1.0, scale=sigma)
        return float(p_tail - math.exp(eps) * norm.sf(x, scale=sigma))

    def add(x: float) -> float:  # H_eps(Q || P) over {x < x*}
        p_head = (1 - q) * norm.cdf(x, scale=sigma) + q * norm.cdf(x, loc=1.0, scale=sigma)
        return float(norm.cdf(x, scale=sigma) - math.exp(eps) * p_head)

    # P/Q = (1 - q) + q exp((2x - 1) / (2 s^2)) equals e^eps at x_r; Q/P equals e^eps at x_a.
    out = 0.0
    if math.exp(eps) < 1 - q + q * 1e300:
        x_r = sigma**2 * math.log((math.exp(eps) - (1 - q)) / q) + 0.5
        out = max(out, remove(x_r))
    if math.exp(-eps) > 1 - q:
        x_a = sigma**2 * math.log((math.exp(-eps) - (1 - q)) / q) + 0.5
        out = max(out, add(x_a))
    return out


@pytest.mark.parametrize(("sigma", "q"), [(1.0, 0.1), (0.6, 0.3), (2.0, 0.02), (0.8, 0.9)])
def test_one_subsampled_step_against_the_exact_hockey_stick(sigma: float, q: float) -> None:
    # Prepare: the exact epsilon at delta 1e-5 by root finding on the closed form
    delta = 1e-5
    exact = optimize.brentq(lambda e: _exact_one_step_delta(sigma, q, e) - delta, 1e-9, 50.0)
    # Execute
    ours = epsilon_pld([GaussianEvent(noise_multiplier=sigma, sample_rate=q)], delta=delta)
    # Assert: an upper bound, within 1%
    assert exact <= ours <= exact * 1.01


@pytest.mark.parametrize(("sigma", "steps"), [(4.0, 16), (10.0, 300), (2.0, 3)])
def test_composed_plain_gaussians_against_the_exact_gaussian(sigma: float, steps: int) -> None:
    # T compositions of N(0, s^2) with sensitivity 1 are one Gaussian with s / sqrt(T) (Dong, Roth,
    # Su 2019), whose exact delta(eps) is Balle and Wang's (ICML 2018, Theorem 8).
    delta = 1e-6
    s = sigma / math.sqrt(steps)

    def exact_delta(eps: float) -> float:
        a, b = 1 / (2 * s), eps * s
        return float(stats.norm.cdf(a - b) - math.exp(eps) * stats.norm.cdf(-a - b))

    exact = optimize.brentq(lambda e: exact_delta(e) - delta, 1e-9, 100.0)
    ours = epsilon_pld([GaussianEvent(noise_multiplier=sigma, steps=steps)], delta=delta)
    assert exact <= ours <= exact * 1.01


def test_a_ledger_of_many_jobs_is_one_pld_of_the_whole_history() -> None:
    # Prepare: three jobs with different mechanisms, each charged round by round
    dpsgd = GaussianEvent(noise_multiplier=1.1, sample_rate=0.02, steps=50)
    central = GaussianEvent(noise_multiplier=3.0, sample_rate=1.0, steps=1)
    other = GaussianEvent(noise_multiplier=0.9, sample_rate=0.005, steps=200)
    history = [dpsgd] * 6 + [central] * 5 + [other] * 3
    # Execute
    report = compose(history, delta=1e-5)
    # Assert: matches dp_accounting's PLD of the whole history, below the sum of the parts' PLDs
    reference = _reference([(1.1, 0.02, 300), (3.0, 1.0, 5), (0.9, 0.005, 600)], 1e-5, 2.0**-14)
    assert report.pld is not None and report.epsilon == report.pld
    assert reference <= report.pld <= reference * 1.01
    parts = [
        epsilon_pld([dpsgd] * 6, delta=1e-5),
        epsilon_pld([central] * 5, delta=1e-5),
        epsilon_pld([other] * 3, delta=1e-5),
    ]
    assert max(parts) < report.pld < sum(parts)
    assert report.pld < report.rdp


@pytest.mark.parametrize("sigma", [0.6, 0.9])
def test_large_epsilons_stay_finite(sigma: float) -> None:
    # Opacus's PRV returned inf here after minutes (q = 0.5, 5,000 steps); the PLD stays finite.
    event = GaussianEvent(noise_multiplier=sigma, sample_rate=0.5, steps=5000)
    ours = epsilon_pld([event], delta=1e-5)
    reference = _reference([(sigma, 0.5, 5000)], 1e-5, 2.0**-8)
    assert math.isfinite(ours)
    assert ours <= reference * 1.001
    assert ours < epsilon_rdp([event], delta=1e-5)


def test_no_release_costs_nothing() -> None:
    assert epsilon_pld([], delta=1e-5) == 0.0
    assert epsilon_pld([GaussianEvent(noise_multiplier=1.0, sample_rate=0.0)], delta=1e-5) == 0.0
    assert epsilon_pld([GaussianEvent(noise_multiplier=1.0, steps=0)], delta=1e-5) == 0.0


def test_the_first_grid_follows_the_upper_bound() -> None:
    assert _pld.start_log2_interval(1.0) == -9
    assert _pld.start_log2_interval(1e-9) == _pld.MIN_LOG2_INTERVAL
    assert _pld.start_log2_interval(1e6) == _pld.MAX_LOG2_INTERVAL
    assert _pld.start_log2_interval(math.inf) == _pld.MAX_LOG2_INTERVAL


@pytest.mark.parametrize(("target", "q", "steps"), [(1.0, 0.01, 1000), (8.0, 0.04, 2000)])
def test_pld_calibration_meets_the_target_with_less_noise(
    target: float, q: float, steps: int
) -> None:
    # Prepare / Execute
    by_rdp = noise_multiplier_for(
        target_epsilon=target, delta=1e-5, sample_rate=q, steps=steps, accountant="rdp"
    )
    by_pld = noise_multiplier_for(
        target_epsilon=target, delta=1e-5, sample_rate=q, steps=steps, accountant="pld"
    )

    def eps(sigma: float) -> float:
        return epsilon_pld(
            [GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)], delta=1e-5
        )

    # Assert: feasible, tight to the search's 0.1%, and less noise than RDP needs
    assert eps(by_pld) <= target < eps(by_pld * 0.995)
    assert by_pld < by_rdp
