from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl_core.coordinator.registry import ClientRegistry, sample_cohort
from fl_core.errors import PolicyRefused, UnknownClient


def test_tokens_authenticate_and_rejoin_replaces_them() -> None:
    registry = ClientRegistry()
    first = registry.join("h1", b"k" * 32)
    assert registry.get("h1", first.token) is first
    second = registry.join("h1", b"k" * 32)
    with pytest.raises(UnknownClient, match="not current"):
        registry.get("h1", first.token)
    assert registry.get("h1", second.token) is second
    with pytest.raises(UnknownClient, match="not joined"):
        registry.get("h2", "x")


def test_identity_key_cannot_change() -> None:
    registry = ClientRegistry()
    registry.join("h1", b"k" * 32)
    with pytest.raises(PolicyRefused, match="different identity key"):
        registry.join("h1", b"q" * 32)


@given(st.integers(1, 60), st.floats(0.05, 1.0), st.integers(1, 10), st.integers(0, 2**32))
def test_fixed_size_sampling(n: int, fraction: float, minimum: int, seed: int) -> None:
    clients = [f"c{i}" for i in range(n)]
    cohort = sample_cohort(
        clients,
        fraction=fraction,
        min_clients=minimum,
        poisson=False,
        rng=np.random.default_rng(seed),
    )
    assert len(set(cohort)) == len(cohort) == min(n, max(minimum, int(fraction * n + 0.5)))
    assert set(cohort) <= set(clients)


def test_poisson_sampling_includes_each_client_with_probability_q() -> None:
    clients = [f"c{i}" for i in range(200)]
    rng = np.random.default_rng(1)
    counts = [
        len(sample_cohort(clients, fraction=0.1, min_clients=50, poisson=True, rng=rng))
        for _ in range(300)
    ]
    assert abs(np.mean(counts) - 20) < 1.0  # mean 20, sd of the mean ~0.25
