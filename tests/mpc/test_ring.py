"""Tests for mpc.ring: dtype and shape checks, wraparound arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import ring_bits, ring_vectors

from mpc import ParameterError
from mpc.ring import (
    add_into,
    check_ring_bits,
    check_ring_vector,
    ring_dtype,
    ring_sum,
    sub_into,
    zeros,
)


@pytest.mark.parametrize(("bits", "dtype"), [(32, np.uint32), (64, np.uint64)])
def test_ring_dtype_matches_ring_size(bits: int, dtype: type) -> None:
    assert ring_dtype(bits) == np.dtype(dtype)
    assert zeros(3, ring_bits=bits).dtype == np.dtype(dtype)


@pytest.mark.parametrize("bad", [16, 31, 128, True, "32", 32.0])
def test_unsupported_ring_sizes_are_refused(bad: object) -> None:
    with pytest.raises(ParameterError, match="ring_bits"):
        check_ring_bits(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ([1, 2, 3], "numpy array"),
        (np.zeros(3, np.int64), "dtype"),
        (np.zeros(3, np.uint64), "dtype"),
        (np.zeros((3, 1), np.uint32), "one-dimensional"),
        (np.zeros(4, np.uint32), "length 4"),
    ],
)
def test_check_ring_vector_names_what_is_wrong(vector: object, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        check_ring_vector(vector, ring_bits=32, length=3)


@given(data=st.data(), bits=ring_bits())
def test_add_and_sub_wrap_modulo_two_to_the_bits(data: st.DataObject, bits: int) -> None:
    # Prepare
    a = data.draw(ring_vectors(ring_bits=bits, min_length=1, max_length=32))
    b = data.draw(ring_vectors(ring_bits=bits, min_length=len(a), max_length=len(a)))
    total = a.copy()

    # Execute
    add_into(total, b)
    added = total.copy()
    sub_into(total, b)

    # Assert: against Python integers.
    modulus = 1 << bits
    assert [int(v) for v in added] == [
        (int(x) + int(y)) % modulus for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_array_equal(total, a)


@given(data=st.data(), bits=ring_bits(), count=st.integers(0, 6))
def test_ring_sum_equals_the_integer_sum_mod_two_to_the_bits(
    data: st.DataObject, bits: int, count: int
) -> None:
    vectors = [
        data.draw(ring_vectors(ring_bits=bits, min_length=5, max_length=5)) for _ in range(count)
    ]
    total = ring_sum(vectors, ring_bits=bits, length=5)
    expected = [sum(int(v[j]) for v in vectors) % (1 << bits) for j in range(5)]
    assert [int(v) for v in total] == expected
