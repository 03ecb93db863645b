from __future__ import annotations

import numpy as np
import pytest
import randomgen  # type: ignore[import-untyped]
from scipy import stats

from fl_core.dp.noise import csprng, gaussian_noise, skellam_noise
from fl_core.errors import ConfigError

N = 1_000_000


def test_csprng_is_aes_counter_and_fresh_by_default() -> None:
    # Execute
    a, b = csprng(), csprng()
    # Assert
    assert isinstance(a.bit_generator, randomgen.AESCounter)
    assert not np.array_equal(a.integers(0, 2**63, 8), b.integers(0, 2**63, 8))


def test_csprng_seed_makes_runs_reproducible() -> None:
    # Execute
    a = csprng(seed=b"k" * 16).integers(0, 2**63, 8)
    b = csprng(seed=b"k" * 16).integers(0, 2**63, 8)
    c = csprng(seed=b"j" * 16).integers(0, 2**63, 8)
    # Assert
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("seed", [b"short", "k" * 16, b"x" * 32])
def test_csprng_rejects_bad_seeds(seed: object) -> None:
    with pytest.raises(ConfigError, match="seed"):
        csprng(seed=seed)  # type: ignore[arg-type]


def test_gaussian_noise_matches_normal_law() -> None:
    # Prepare
    rng = csprng(seed=b"g" * 16)
    # Execute
    x = gaussian_noise(N, std=2.5, rng=rng)
    # Assert
    assert x.dtype == np.float64
    assert abs(x.mean()) < 5 * 2.5 / np.sqrt(N)
    assert x.std() == pytest.approx(2.5, rel=5e-3)
    assert stats.kstest(x / 2.5, "norm").pvalue > 1e-4


def test_gaussian_noise_zero_std_and_bad_arguments() -> None:
    rng = csprng(seed=b"g" * 16)
    np.testing.assert_array_equal(gaussian_noise(4, std=0.0, rng=rng), np.zeros(4))
    with pytest.raises(ConfigError, match="std"):
        gaussian_noise(4, std=-1.0, rng=rng)
    with pytest.raises(ConfigError, match="size"):
        gaussian_noise(-1, std=1.0, rng=rng)


@pytest.mark.parametrize("mu", [0.7, 3.0, 50.0])
def test_skellam_noise_matches_the_skellam_law(mu: float) -> None:
    # Prepare
    rng = csprng(seed=b"s" * 16)
    # Execute
    x = skellam_noise(N, mu=mu, rng=rng)
    # Assert: moments, then a chi-square test against scipy's Skellam pmf
    assert x.dtype == np.int64
    assert abs(x.mean()) < 5 * np.sqrt(2 * mu / N)
    assert x.var() == pytest.approx(2 * mu, rel=1e-2)
    half = int(np.ceil(4 * np.sqrt(2 * mu)))
    support = np.arange(-half, half + 1)
    observed = np.array([np.count_nonzero(x == k) for k in support], dtype=np.float64)
    expected = stats.skellam.pmf(support, mu, mu) * N
    tails = N - observed.sum(), N - expected.sum()
    observed, expected = np.append(observed, tails[0]), np.append(expected, tails[1])
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_skellam_noise_zero_and_bad_mu() -> None:
    rng = csprng(seed=b"s" * 16)
    np.testing.assert_array_equal(skellam_noise(5, mu=0.0, rng=rng), np.zeros(5, dtype=np.int64))
    for mu in (-1.0, float("nan"), 1e16):
        with pytest.raises(ConfigError, match="mu"):
            skellam_noise(5, mu=mu, rng=rng)
