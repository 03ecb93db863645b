from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fl_core.dp.noise import csprng
from fl_core.dp.sampling import poisson_indices, poisson_sample
from fl_core.errors import ConfigError


def test_poisson_sample_sizes_are_binomial() -> None:
    # Prepare
    rng = csprng(seed=b"p" * 16)
    population, rate, draws = 200, 0.1, 4000
    # Execute
    sizes = np.array([len(poisson_indices(population, rate=rate, rng=rng)) for _ in range(draws)])
    # Assert: the size law is Binomial(200, 0.1) (chi-square over its central values)
    support = np.arange(8, 33)
    observed = np.array([np.count_nonzero(sizes == k) for k in support], dtype=np.float64)
    expected = stats.binom.pmf(support, population, rate) * draws
    observed = np.append(observed, draws - observed.sum())
    expected = np.append(expected, draws - expected.sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_each_unit_is_included_independently_with_rate() -> None:
    # Prepare
    rng = csprng(seed=b"q" * 16)
    counts = np.zeros(50)
    # Execute
    for _ in range(2000):
        counts[poisson_indices(50, rate=0.3, rng=rng)] += 1
    # Assert: every unit's inclusion frequency is 0.3 within 5 standard errors
    assert np.all(np.abs(counts / 2000 - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 2000))


def test_poisson_sample_keeps_order_and_members() -> None:
    # Prepare
    clients = [f"client-{i}" for i in range(30)]
    # Execute
    chosen = poisson_sample(clients, rate=0.5, rng=csprng(seed=b"r" * 16))
    again = poisson_sample(clients, rate=0.5, rng=csprng(seed=b"r" * 16))
    # Assert
    assert chosen == again
    assert chosen == [c for c in clients if c in set(chosen)]


def test_edge_rates() -> None:
    rng = csprng(seed=b"e" * 16)
    assert poisson_sample(["a", "b"], rate=1.0, rng=rng) == ["a", "b"]
    assert poisson_sample(["a", "b"], rate=0.0, rng=rng) == []
    assert len(poisson_indices(0, rate=0.5, rng=rng)) == 0


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), True])
def test_bad_rate_is_rejected(rate: float) -> None:
    with pytest.raises(ConfigError, match="rate"):
        poisson_indices(10, rate=rate, rng=csprng(seed=b"e" * 16))
