from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl_core.codec import (
    ALLOWED_DTYPES,
    all_finite,
    check_spec,
    expect_tensor,
    from_le_bytes,
    to_le_bytes,
)
from fl_core.errors import CodecError

dtypes = st.sampled_from(sorted(ALLOWED_DTYPES))


@given(dtypes.flatmap(lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=4))))
def test_roundtrip_is_identity(array: np.ndarray) -> None:
    data = to_le_bytes(array)
    back = from_le_bytes(bytes(data), dtype=array.dtype.name, shape=array.shape)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert not back.flags.writeable


def test_big_endian_input_travels_little_endian() -> None:
    array = np.arange(4, dtype=">u4")
    data = bytes(to_le_bytes(array))
    assert data == np.arange(4, dtype="<u4").tobytes()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "object", "shape": [1], "nbytes": 8}, "not allowed"),
        ({"dtype": "float32", "shape": [2, 2], "nbytes": 15}, "do not match"),
        ({"dtype": "float32", "shape": [10**6, 10**6], "nbytes": 4}, "more than"),
        ({"dtype": "float32", "shape": [1] * 9, "nbytes": 4}, "dimensions"),
    ],
)
def test_check_spec_rejects_bad_descriptions(kwargs: dict, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        check_spec(**kwargs, max_elements=10**9, field="update")


def test_expect_tensor_names_the_problem() -> None:
    update = np.array([1.0, np.nan, np.inf], dtype=np.float32)
    with pytest.raises(CodecError, match="update: 2 element"):
        expect_tensor(update, field="update", dtype="float32", shape=(3,), finite=True)
    with pytest.raises(CodecError, match="dtype float32, expected float64"):
        expect_tensor(update, field="update", dtype="float64")
    with pytest.raises(CodecError, match=r"shape \(3,\), expected \(4,\)"):
        expect_tensor(update, field="update", dtype="float32", shape=(4,))


def test_objects_cannot_be_encoded() -> None:
    with pytest.raises(CodecError):
        to_le_bytes(np.array([object()]))


@given(
    st.sampled_from(["float16", "float32", "float64"]).flatmap(
        lambda d: hnp.arrays(
            np.dtype(d),
            hnp.array_shapes(min_dims=0, max_dims=3),
            elements=hnp.from_dtype(np.dtype(d), allow_nan=True, allow_infinity=True),
        )
    )
)
def test_all_finite_agrees_with_the_element_wise_check(array: np.ndarray) -> None:
    # Huge finite float64 values overflow the one-pass sum; the fallback must still say True.
    assert all_finite(array) == bool(np.isfinite(array).all())


def test_all_finite_with_an_overflowing_sum_of_finite_values() -> None:
    huge = np.full(4, np.finfo(np.float64).max, dtype=np.float64)
    assert all_finite(huge)
    huge[2] = np.nan
    assert not all_finite(huge)
