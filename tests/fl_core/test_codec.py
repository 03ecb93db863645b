from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl_core.codec import ALLOWED_DTYPES, check_spec, expect_tensor, from_le_bytes, to_le_bytes
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
