from __future__ import annotations

import math
from fractions import Fraction

import pytest

from he._dgauss import bernoulli_exp, discrete_gaussian, discrete_laplace


def test_bernoulli_exp_frequency() -> None:
    # P(true) = exp(-1/2) ~ 0.6065; 4000 draws, 5 standard errors
    n = 4000
    hits = sum(bernoulli_exp(Fraction(1, 2)) for _ in range(n))
    p = math.exp(-0.5)
    assert abs(hits / n - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_bernoulli_exp_above_one() -> None:
    n = 4000
    hits = sum(bernoulli_exp(Fraction(5, 2)) for _ in range(n))
    p = math.exp(-2.5)
    assert abs(hits / n - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_discrete_laplace_is_symmetric_with_the_right_variance() -> None:
    # Var of discrete Laplace with scale t: 2 e^{-1/t} / (1 - e^{-1/t})^2
    t, n = 3, 4000
    samples = [discrete_laplace(t) for _ in range(n)]
    q = math.exp(-1 / t)
    var = 2 * q / (1 - q) ** 2
    mean = sum(samples) / n
    assert abs(mean) < 5 * math.sqrt(var / n)
    assert sum(s * s for s in samples) / n == pytest.approx(var, rel=0.15)


@pytest.mark.parametrize("sigma", [0.5, 4.0, 1000.0])
def test_discrete_gaussian_moments(sigma: float) -> None:
    # The discrete Gaussian's variance is at most sigma^2 and close to it for sigma >= 1.
    n = 3000
    samples = [discrete_gaussian(sigma) for _ in range(n)]
    mean = sum(samples) / n
    var = sum(s * s for s in samples) / n
    assert all(isinstance(s, int) for s in samples)
    assert abs(mean) < 5 * sigma / math.sqrt(n) + 0.05
    if sigma >= 1:
        assert var == pytest.approx(sigma**2, rel=0.12)
    else:
        # oracle: the exact pmf summed over a wide window
        weights = {k: math.exp(-(k * k) / (2 * sigma * sigma)) for k in range(-20, 21)}
        z = sum(weights.values())
        exact = sum(k * k * w for k, w in weights.items()) / z
        assert var == pytest.approx(exact, rel=0.25)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="sigma must be"):
        discrete_gaussian(0.0)
    with pytest.raises(ValueError, match="positive integer"):
        discrete_laplace(0)
