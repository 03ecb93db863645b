from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.linalg import hadamard

from fl_core.dp._rotation import fwht, padded_length, rotate, unrotate
from fl_core.errors import ConfigError

SEED = b"rotation-seed-16"


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_fwht_matches_the_hadamard_matrix(n: int) -> None:
    # Prepare: the dense normalised Hadamard matrix is the oracle
    x = np.random.default_rng(0).standard_normal((3, n))
    # Execute / Assert
    np.testing.assert_allclose(fwht(x), x @ hadamard(n).T / np.sqrt(n), atol=1e-12)


@given(dim=st.integers(1, 300), seed=st.binary(min_size=16, max_size=32))
def test_rotation_is_norm_preserving_and_invertible(dim: int, seed: bytes) -> None:
    # Prepare
    x = np.random.default_rng(dim).standard_normal(dim)
    # Execute
    y = rotate(x, seed=seed)
    back = unrotate(y, seed=seed, dim=dim)
    # Assert
    assert y.shape == (padded_length(dim),)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    np.testing.assert_allclose(back, x, atol=1e-10)


def test_rotation_depends_on_the_seed_and_spreads_mass() -> None:
    # Prepare: all the mass on one coordinate
    x = np.zeros(1000)
    x[7] = 1.0
    z = np.random.default_rng(1).standard_normal(1000)
    # Execute
    a = rotate(x, seed=SEED)
    za, zb = rotate(z, seed=SEED), rotate(z, seed=b"another-seed-abc")
    # Assert: every coordinate now carries 1/sqrt(1024) in absolute value; D depends on the seed
    np.testing.assert_allclose(np.abs(a), 1 / 32, rtol=1e-12)
    assert not np.allclose(za, zb)


def test_bad_seed_and_lengths_are_rejected() -> None:
    with pytest.raises(ConfigError, match="rotation_seed"):
        rotate(np.ones(4), seed=b"short")
    with pytest.raises(ConfigError, match="power-of-two"):
        fwht(np.ones(3))
    with pytest.raises(ConfigError, match="does not match"):
        unrotate(np.ones(8), seed=SEED, dim=20)
