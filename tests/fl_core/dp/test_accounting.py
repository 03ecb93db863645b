from __future__ import annotations

import math

import dp_accounting as dpa
import mpmath
import numpy as np
import pytest
from dp_accounting import rdp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, special, stats

from fl_core.dp.accounting import (
    ORDERS,
    GaussianEvent,
    SkellamEvent,
    compose,
    dpsgd_epsilon,
    epsilon_pld,
    epsilon_rdp,
    event_from_dict,
    event_to_dict,
    noise_multiplier_for,
    rdp_curve,
    rdp_to_delta,
    rdp_to_epsilon,
    skellam_rdp,
    subsampled_rdp_upper_bound,
)
from fl_core.errors import ConfigError

# (sigma, q, steps, delta): REFERENCES.md section 3.2 plus settings around them.
GRID = [
    (1.5, 0.04, 2250, 1e-5),
    (1.1, 256 / 60000, 14062, 1e-5),
    (4.0, 0.01, 10000, 1e-5),
    (1.0, 0.1, 500, 1e-6),
    (0.8, 0.01, 1000, 1e-5),
    (2.0, 0.05, 300, 1e-6),
    (1.0, 1.0, 10, 1e-5),
    (5.0, 0.2, 2000, 1e-7),
]


def _dpa_event(sigma: float, q: float, steps: int) -> dpa.DpEvent:
    return dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps)


def _mp_log_a(q: float, sigma: float, alpha: float) -> float:
    """log E_{z~N(0,s^2)}[((1-q) + q exp((2z-1)/(2 s^2)))^alpha] by numerical integration."""
    mpmath.mp.dps = 30

    def f(z: mpmath.mpf) -> mpmath.mpf:
        return (
            mpmath.npdf(z, 0, sigma)
            * ((1 - q) + q * mpmath.exp((2 * z - 1) / (2 * sigma**2))) ** alpha
        )

    return float(mpmath.log(mpmath.quad(f, [-mpmath.inf, -5, 0, 5, 10, 20, mpmath.inf])))


def test_opacus_published_vectors() -> None:
    # Opacus accountants_test.py: RDP with int(90 / 0.04) steps.
    rdp_eps = epsilon_rdp(
        [GaussianEvent(noise_multiplier=1.5, sample_rate=0.04, steps=2250)], delta=1e-5
    )
    assert rdp_eps == pytest.approx(7.32911117143, abs=1e-7)


def test_noise_calibration_reproduces_opacus_vectors() -> None:
    # Opacus: sigma 1.416 (RDP, 90 epochs at q = 0.04) and 1.3562 (RDP, 2000 steps) for eps 8.
    # Opacus stops its search 0.01 below the target, we stop at 0.1% of sigma: allow 1%.
    sigma_epochs = noise_multiplier_for(target_epsilon=8, delta=1e-5, sample_rate=0.04, steps=2250)
    sigma_steps = noise_multiplier_for(target_epsilon=8, delta=1e-5, sample_rate=0.04, steps=2000)
    assert sigma_epochs == pytest.approx(1.416, rel=1e-2)
    assert sigma_steps == pytest.approx(1.3562, rel=1e-2)
    for sigma, steps in ((sigma_epochs, 2250), (sigma_steps, 2000)):
        assert (
            epsilon_rdp(
                [GaussianEvent(noise_multiplier=sigma, sample_rate=0.04, steps=steps)], delta=1e-5
            )
            <= 8
        )


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), GRID)
def test_grid_against_dp_accounting(sigma: float, q: float, steps: int, delta: float) -> None:
    # Prepare: Google's dp_accounting as the oracle
    event = _dpa_event(sigma, q, steps)
    oracle_rdp = rdp.RdpAccountant(orders=[float(a) for a in range(2, 257)])
    oracle_rdp.compose(event)
    # Execute
    report = dpsgd_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta)
    ours_int = rdp_to_epsilon(
        list(range(2, 257)),
        rdp_curve(
            GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps), list(range(2, 257))
        ),
        delta=delta,
    )
    # Assert
    assert report.pld is not None
    for value in (report.rdp, report.pld, report.epsilon):
        assert math.isfinite(value) and value > 0
    assert ours_int == pytest.approx(oracle_rdp.get_epsilon(delta), rel=1e-3)  # RDP vs RDP
    assert report.epsilon == report.pld <= report.rdp  # PLD is the tighter one


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), [g for g in GRID if g[1] < 1])
def test_full_order_grid_rdp_against_dp_accounting(
    sigma: float, q: float, steps: int, delta: float
) -> None:
    # On the full grid (fractional orders too) dp_accounting 0.6 over-estimates the RDP at some
    # fractional orders (it does not converge at q = 0.1, sigma = 1); ours may then be lower, and
    # must then match an mpmath integral at its optimal order.
    oracle = rdp.RdpAccountant()
    oracle.compose(_dpa_event(sigma, q, steps))
    ref = oracle.get_epsilon(delta)
    curve = rdp_curve(GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps))
    ours = rdp_to_epsilon(ORDERS, curve, delta=delta)
    assert ours <= ref * (1 + 1e-3)
    if ours < ref * (1 - 1e-3):
        orders = np.asarray(ORDERS)
        eps = (
            curve
            - (math.log(delta) + np.log(orders)) / (orders - 1)
            + np.log((orders - 1) / orders)
        )
        best = float(orders[int(np.argmin(eps))])
        exact = _mp_log_a(q, sigma, best) / (best - 1) * steps
        assert curve[int(np.argmin(eps))] == pytest.approx(exact, rel=1e-6)


def test_dp_accounting_known_rdp_values() -> None:
    # dp_accounting rdp_privacy_accountant_test.py: q = 0.01, sigma = 2.5, 50 steps. At integer
    # and large orders both libraries are exact; at fractional orders dp_accounting 0.6 returns an
    # upper bound, and Opacus's value (ours) must match an mpmath integral instead.
    event = GaussianEvent(noise_multiplier=2.5, sample_rate=0.01, steps=50)
    np.testing.assert_allclose(
        rdp_curve(event, [5.0, 50.0, 100.0]),
        [2.18075656e-3, 2.38460375e-2, 1.67416308e2],
        rtol=1e-4,
    )
    fractional = rdp_curve(event, [1.5, 2.5])
    assert np.all(fractional <= np.array([6.70579741e-4, 1.08548710e-3]))
    for order, value in zip([1.5, 2.5], fractional, strict=True):
        assert value == pytest.approx(50 * _mp_log_a(0.01, 2.5, order) / (order - 1), rel=1e-6)


def test_gaussian_closed_form_and_edge_cases() -> None:
    curve = rdp_curve(GaussianEvent(noise_multiplier=2.0, sample_rate=1.0, steps=6), ORDERS)
    np.testing.assert_allclose(curve, 6 * np.asarray(ORDERS) / (2 * 4.0))
    assert (
        epsilon_rdp([GaussianEvent(noise_multiplier=1.0, sample_rate=0.0, steps=100)], delta=1e-5)
        == 0.0
    )
    assert (
        epsilon_rdp([GaussianEvent(noise_multiplier=1.0, sample_rate=0.5, steps=0)], delta=1e-5)
        == 0.0
    )
    assert compose([], delta=1e-5).epsilon == 0.0


def test_exact_gaussian_point() -> None:
    # sigma = 4.530877117 with q = 1: RDP gives exactly (1, 1e-6) (dp_accounting's test); the PLD
    # bound must lie between the exact epsilon of the Gaussian (Balle and Wang 2018) and 1% above.
    sigma, delta = 4.530877117, 1e-6
    event = GaussianEvent(noise_multiplier=sigma, sample_rate=1.0, steps=1)

    def exact_delta(eps: float) -> float:
        a, b = 1 / (2 * sigma), eps * sigma
        return float(stats.norm.cdf(a - b) - math.exp(eps) * stats.norm.cdf(-a - b))

    exact = optimize.brentq(lambda e: exact_delta(e) - delta, 0.0, 5.0)
    assert epsilon_rdp([event], delta=delta) == pytest.approx(1.0, rel=1e-6)
    assert exact <= epsilon_pld([event], delta=delta) <= exact * 1.01


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), GRID[:4])
def test_epsilon_delta_round_trip(sigma: float, q: float, steps: int, delta: float) -> None:
    curve = rdp_curve(GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps))
    eps = rdp_to_epsilon(ORDERS, curve, delta=delta)
    assert rdp_to_delta(ORDERS, curve, epsilon=eps) == pytest.approx(delta, rel=1e-9)


@settings(max_examples=6)
@given(
    sigma=st.floats(0.5, 5.0),
    q=st.floats(1e-3, 0.5),
    steps=st.integers(1, 2000),
    factor=st.floats(1.05, 3.0),
)
def test_monotonicity(sigma: float, q: float, steps: int, factor: float) -> None:
    def eps(s: float, rate: float, t: int) -> float:
        return epsilon_rdp(
            [GaussianEvent(noise_multiplier=s, sample_rate=rate, steps=t)], delta=1e-5
        )

    base = eps(sigma, q, steps)
    assert eps(sigma, q, int(steps * factor) + 1) >= base
    assert eps(sigma, min(1.0, q * factor), steps) >= base
    assert eps(sigma * factor, q, steps) <= base


@settings(max_examples=5)
@given(
    target=st.floats(1.0, 10.0),
    epochs=st.integers(10, 100),
    q=st.sampled_from([1e-3, 1e-2, 0.1]),
    delta=st.sampled_from([1e-4, 1e-5, 1e-6]),
)
def test_noise_multiplier_never_overshoots(
    target: float, epochs: int, q: float, delta: float
) -> None:
    steps = int(epochs / q)
    sigma = noise_multiplier_for(target_epsilon=target, delta=delta, sample_rate=q, steps=steps)
    assert (
        epsilon_rdp(
            [GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)], delta=delta
        )
        <= target
    )


def test_heterogeneous_composition_adds_rdp() -> None:
    a = GaussianEvent(noise_multiplier=1.2, sample_rate=0.02, steps=300)
    b = GaussianEvent(noise_multiplier=3.0, sample_rate=1.0, steps=5)
    c = SkellamEvent(mu=500.0, l1_sensitivity=40.0, l2_sensitivity=20.0, steps=2)
    report = compose([a, b, c], delta=1e-5)
    expected = rdp_to_epsilon(ORDERS, rdp_curve(a) + rdp_curve(b) + rdp_curve(c), delta=1e-5)
    assert report.rdp == pytest.approx(expected)
    assert report.pld is None  # no PLD for Skellam events here
    twice = compose([a, a], delta=1e-5)
    doubled = compose(
        [GaussianEvent(noise_multiplier=1.2, sample_rate=0.02, steps=600)], delta=1e-5
    )
    assert twice.rdp == pytest.approx(doubled.rdp)
    assert twice.pld == pytest.approx(doubled.pld)
    with pytest.raises(ConfigError, match="Gaussian"):
        epsilon_pld([a, c], delta=1e-5)


def _skellam_exact_divergence(mu: float, shift: int, alpha: float) -> float:
    half = int(60 * math.sqrt(2 * mu)) + 60 + shift
    k = np.arange(-half, half + 1)
    log_p = stats.skellam.logpmf(k - shift, mu, mu)
    log_q = stats.skellam.logpmf(k, mu, mu)
    keep = np.isfinite(log_p) & np.isfinite(log_q)  # far tails underflow; they add nothing
    terms = alpha * log_p[keep] + (1 - alpha) * log_q[keep]
    return float(special.logsumexp(terms) / (alpha - 1))


@pytest.mark.parametrize("mu", [0.5, 3.0, 40.0, 2000.0])
@pytest.mark.parametrize("shift", [1, 4, 15])
def test_skellam_rdp_bounds_the_exact_divergence(mu: float, shift: int) -> None:
    # One dimension: the Renyi divergence between Sk(mu, mu) + shift and Sk(mu, mu), summed
    # exactly over the support, must not exceed Theorem 3.5's bound with D1 = D2 = shift.
    orders = [1.5, 2.0, 3.0, 7.5, 20.0, 64.0]
    bound = skellam_rdp(orders, mu=mu, l1_sensitivity=shift, l2_sensitivity=shift)
    for order, b in zip(orders, bound, strict=True):
        assert _skellam_exact_divergence(mu, shift, order) <= b * (1 + 1e-9)


def test_skellam_rdp_tends_to_the_gaussian() -> None:
    orders = np.arange(2, 65, dtype=np.float64)
    for mu in (1e3, 1e5, 1e7):
        skellam = skellam_rdp(orders, mu=mu, l1_sensitivity=10.0, l2_sensitivity=10.0)
        gauss = orders * 100 / (2 * (2 * mu))  # variance 2 mu
        assert np.all(skellam >= gauss)
        assert np.max(skellam / gauss - 1) < 50 / mu


@pytest.mark.parametrize("q", [1e-3, 0.01, 0.1, 0.5])
@pytest.mark.parametrize("sigma", [0.7, 1.5, 4.0])
def test_zhu_wang_bound_dominates_the_exact_subsampled_gaussian(q: float, sigma: float) -> None:
    orders = [2.0, 3.0, 5.0, 10.0, 32.0, 63.0]
    base = np.arange(2, 64) / (2 * sigma**2)
    bound = subsampled_rdp_upper_bound(base, sample_rate=q, orders=orders)
    exact = rdp_curve(GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=1), orders)
    assert np.all(bound >= exact * (1 - 1e-9))
    assert np.all(bound <= base[np.asarray(orders, dtype=int) - 2])
    np.testing.assert_allclose(
        subsampled_rdp_upper_bound(base, sample_rate=1.0, orders=orders),
        base[np.asarray(orders, dtype=int) - 2],
    )
    np.testing.assert_array_equal(
        subsampled_rdp_upper_bound(base, sample_rate=0.0, orders=orders), 0.0
    )


def test_events_round_trip_through_json_dicts() -> None:
    for event in (
        GaussianEvent(noise_multiplier=1.1, sample_rate=0.01, steps=7),
        SkellamEvent(mu=12.5, l1_sensitivity=3.0, l2_sensitivity=2.0, sample_rate=0.5, steps=3),
    ):
        assert event_from_dict(event_to_dict(event)) == event


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "laplace"}, "kind"),
        ({"kind": "gaussian", "noise_multiplier": 1.0, "sample_rate": 1.0}, "fields"),
        ({"kind": "gaussian", "noise_multiplier": 1.0, "sample_rate": 1.0, "steps": 1.5}, "steps"),
        (
            {"kind": "gaussian", "noise_multiplier": "1", "sample_rate": 1.0, "steps": 1},
            "noise_multiplier",
        ),
        (
            {"kind": "gaussian", "noise_multiplier": -1.0, "sample_rate": 1.0, "steps": 1},
            "noise_multiplier",
        ),
        (
            {"kind": "gaussian", "noise_multiplier": 1.0, "sample_rate": 2.0, "steps": 1},
            "sample_rate",
        ),
        (
            {
                "kind": "skellam",
                "mu": 0.0,
                "l1_sensitivity": 1.0,
                "l2_sensitivity": 1.0,
                "sample_rate": 1.0,
                "steps": 1,
            },
            "mu",
        ),
    ],
)
def test_bad_event_dicts_are_rejected(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        event_from_dict(data)


def test_bad_delta_is_rejected() -> None:
    for delta in (0.0, 1.0, -1e-5, float("nan")):
        with pytest.raises(ConfigError, match="delta"):
            epsilon_rdp([GaussianEvent(noise_multiplier=1.0)], delta=delta)
