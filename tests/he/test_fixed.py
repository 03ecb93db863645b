"""BFV fixed point: fraction bits from the no-wrap bound, and exact sums within the tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import he
from he.fixed import (
    MIN_FRACTION_BITS,
    decode_fixed,
    encode_fixed,
    fixed_tolerance,
    fraction_bits,
    real_params,
)


def test_fraction_bits_is_the_largest_that_cannot_wrap() -> None:
    t_half = he.BFV_8192.max_abs_integer
    bits = fraction_bits(he.BFV_8192, limit=8000.0, max_owners=8)
    assert bits == 26
    assert 8000.0 * 2.0**bits + 4 <= t_half < 8000.0 * 2.0 ** (bits + 1) + 4


def test_too_few_fraction_bits_are_refused() -> None:
    with pytest.raises(he.SpecError, match=f"leave 6 fraction bits.*at least {MIN_FRACTION_BITS}"):
        fraction_bits(he.BFV_4096, limit=8000.0, max_owners=8)
    with pytest.raises(he.SpecError, match="finite and > 0"):
        fraction_bits(he.BFV_8192, limit=float("nan"), max_owners=2)


def test_reals_use_ckks_when_present_and_bfv_otherwise() -> None:
    assert real_params((he.CKKS_8192, he.BFV_4096)) is he.CKKS_8192
    assert real_params((he.BFV_8192,)) is he.BFV_8192


@settings(max_examples=50, deadline=None)
@given(
    owners=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_of_rounded_values_decodes_within_the_tolerance(owners: int, seed: int) -> None:
    # The plaintext arithmetic the key holder relies on, without encryption: owners round,
    # the sum is taken mod t and centred, and decodes within owners * 2^-(f+1) of the truth.
    rng = np.random.default_rng(seed)
    limit = 1000.0 * owners
    bits = fraction_bits(he.BFV_8192, limit=limit, max_owners=owners)
    values = rng.uniform(-1000.0, 1000.0, size=(owners, 64))
    values[0, :2] = [1000.0, -1000.0]  # at the range limits
    t = he.BFV_8192.plain_modulus
    total = sum(int(v) for v in encode_fixed(values[:, 0], bits=bits))
    ring = np.sum(encode_fixed(values, bits=bits).astype(object), axis=0) % t
    centred = np.array([int(x) - t if int(x) > t // 2 else int(x) for x in ring], dtype=np.int64)
    decoded = decode_fixed(centred, bits=bits)
    assert int(centred[0]) == total
    assert np.all(np.abs(decoded - values.sum(axis=0)) <= fixed_tolerance(owners=owners, bits=bits))
