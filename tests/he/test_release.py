from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import he
from he.release import Release, _uniform_symmetric, flood_and_round, fresh_noise_bound


def test_fresh_noise_bound_covers_the_measured_noise() -> None:
    # REFERENCES 4.2 measured 1.9e-8 at scale 2^40 (N=8192); the bound must exceed it.
    params = he.HEParams(
        scheme=he.Scheme.CKKS,
        poly_modulus_degree=8192,
        coeff_mod_bit_sizes=(60, 40, 40, 60),
        scale_bits=40,
    )
    assert fresh_noise_bound(params) > 1.9e-8
    assert fresh_noise_bound(he.CKKS_8192) == pytest.approx(fresh_noise_bound(params) / 2**50)


@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50),
    flood_bits=st.integers(20, 60),
)
def test_flood_and_round_stays_within_tolerance(values: list[float], flood_bits: int) -> None:
    # Prepare
    x = np.array(values)
    bound = 1e-20

    # Execute
    released, grid, tolerance = flood_and_round(x, noise_bound=bound, flood_bits=flood_bits)

    # Assert: within the stated tolerance and on the published grid
    assert np.all(np.abs(released - x) <= tolerance)
    assert np.all(np.rint(released / grid) * grid == released)
    assert tolerance >= bound * 2.0**flood_bits


def test_flooding_is_fresh_and_wide() -> None:
    # Prepare: zeros, so the release is the flooding noise itself (rounded)
    x = np.zeros(20_000)
    bound = 2.0**-60

    # Execute
    released, grid, _ = flood_and_round(x, noise_bound=bound, flood_bits=40)
    again, _, _ = flood_and_round(x, noise_bound=bound, flood_bits=40)

    # Assert: uniform on [-2^-20, 2^-20]: mean 0, variance W^2 / 3
    half = 2.0**-20
    assert np.all(np.abs(released) <= half + grid)
    assert abs(released.mean()) < 5 * half / math.sqrt(3 * len(x))
    assert released.var() == pytest.approx(half**2 / 3, rel=0.05)
    assert not np.array_equal(released, again)


def test_uniform_sampler_is_symmetric() -> None:
    u = _uniform_symmetric(100_000, 1.0)
    assert u.min() > -1 and u.max() < 1
    assert abs(np.mean(u > 0) - 0.5) < 0.01


def test_flood_bits_range_is_enforced() -> None:
    with pytest.raises(he.SpecError, match=r"flood_bits must lie in \[20, 128\]"):
        flood_and_round(np.zeros(2), noise_bound=1e-9, flood_bits=19)


def _release(spec, ints, reals, **kw) -> Release:
    base = {"job_id": "j", "round": 1, "spec": spec, "contributors": ("a", "b"),
            "integers": ints, "reals": reals, "real_tolerance": 1e-9, "grid": 2.0**-40,
            "flood_bits": 40}  # fmt: skip
    return Release(**(base | kw))


def test_release_round_trip() -> None:
    # Prepare
    spec = he.VectorSpec(length=3, max_abs=1.0, max_owners=4)
    release = _release(
        spec,
        np.zeros(0, dtype=np.int64),
        np.array([0.5, -0.25, 1e-3]),
        dp=he.DPNoise(1.0, 1e-6, 0.03, {"sums": 2.0}),
    )

    # Execute
    back = Release.from_bytes(release.to_bytes())

    # Assert
    assert back.spec == spec and back.contributors == ("a", "b")
    np.testing.assert_array_equal(back.vector(), release.reals)
    assert back.dp == release.dp
    np.testing.assert_array_equal(back.tolerances(), np.full(3, 1e-9))


def test_release_with_wrong_sizes_is_refused() -> None:
    spec = he.VectorSpec(length=3, max_abs=1.0, max_owners=4)
    data = _release(spec, np.zeros(0, dtype=np.int64), np.zeros(2)).to_bytes()
    with pytest.raises(he.DecodeError, match="0 int64 and 3 float64"):
        Release.from_bytes(data)


def test_release_with_non_finite_values_is_refused() -> None:
    spec = he.VectorSpec(length=1, max_abs=1.0, max_owners=4)
    data = _release(spec, np.zeros(0, dtype=np.int64), np.array([np.inf])).to_bytes()
    with pytest.raises(he.DecodeError, match="non-finite"):
        Release.from_bytes(data)
