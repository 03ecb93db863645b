"""The tensor codec: (dtype, shape, little-endian bytes) in both directions, with every check.

Nothing here trusts its input. A decoder is told what to expect (dtype, shape or bounds on the
number of elements) and raises :class:`~fl_core.errors.CodecError` naming the first thing that does
not fit. No pickle, no ``np.load``: bytes become an array only through ``np.frombuffer`` with an
explicit little-endian dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import CodecError

ALLOWED_DTYPES: dict[str, np.dtype[np.generic]] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float32", "float64", "int32", "int64", "uint32", "uint64", "uint8", "int8")
}
"""Dtypes that may cross the wire, by name; all little-endian."""

MAX_DIMS = 8


def dtype_name(array: npt.NDArray[np.generic]) -> str:
    """Return the wire name of ``array``'s dtype, or raise if it may not travel."""
    name = array.dtype.name
    if name not in ALLOWED_DTYPES or array.dtype.kind == "O":
        raise CodecError(f"dtype {array.dtype} cannot be sent; allowed: {sorted(ALLOWED_DTYPES)}")
    return name


def to_le_bytes(array: npt.NDArray[np.generic]) -> memoryview:
    """Return ``array``'s elements as a C-ordered little-endian buffer (no copy when possible)."""
    wire = ALLOWED_DTYPES[dtype_name(array)]
    arr = np.ascontiguousarray(array, dtype=wire)
    return arr.data.cast("B")


def check_spec(
    *, dtype: str, shape: Sequence[int], nbytes: int, max_elements: int, field: str
) -> np.dtype[np.generic]:
    """Check a tensor description from the wire before anything is allocated for it.

    Args:
        dtype: the dtype name sent.
        shape: the shape sent.
        nbytes: the byte length sent.
        max_elements: the most elements the receiver accepts for this tensor.
        field: the field's name, for the error message.

    Returns:
        The little-endian numpy dtype.

    Raises:
        CodecError: on an unknown dtype, too many dimensions, too many elements, or a byte length
            that does not equal ``prod(shape) * itemsize``.
    """
    if dtype not in ALLOWED_DTYPES:
        raise CodecError(
            f"{field}: dtype {dtype!r} is not allowed; allowed: {sorted(ALLOWED_DTYPES)}"
        )
    if len(shape) > MAX_DIMS:
        raise CodecError(f"{field}: {len(shape)} dimensions, at most {MAX_DIMS} allowed")
    count = 1
    for dim in shape:
        if dim < 0:
            raise CodecError(f"{field}: negative dimension {dim}")
        if dim > max_elements:  # also when another dimension is 0: (0, 2^62) is refused
            raise CodecError(f"{field}: dimension {dim} is above {max_elements} elements")
        count *= int(dim)
        if count > max_elements:
            raise CodecError(f"{field}: more than {max_elements} elements")
    wire = ALLOWED_DTYPES[dtype]
    if nbytes != count * wire.itemsize:
        raise CodecError(
            f"{field}: {nbytes} bytes do not match shape {tuple(shape)} of {dtype} "
            f"({count * wire.itemsize} bytes expected)"
        )
    return wire


def from_le_bytes(
    buffer: bytes | bytearray | memoryview, *, dtype: str, shape: Sequence[int]
) -> npt.NDArray[np.generic]:
    """View ``buffer`` as a read-only array of ``dtype`` and ``shape`` (no copy).

    The caller has checked the description with :func:`check_spec`; the length is checked again.
    """
    wire = ALLOWED_DTYPES[dtype]
    view = memoryview(buffer).cast("B")
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    if view.nbytes != count * wire.itemsize:
        raise CodecError(f"tensor data has {view.nbytes} bytes, expected {count * wire.itemsize}")
    arr = np.frombuffer(view, dtype=wire, count=count).reshape(tuple(int(d) for d in shape))
    arr.flags.writeable = False
    return arr.astype(wire.newbyteorder("="), copy=False)


def expect_tensor(
    array: npt.NDArray[np.generic],
    *,
    field: str,
    dtype: str,
    shape: Sequence[int] | None = None,
    finite: bool = False,
) -> npt.NDArray[np.generic]:
    """Check a decoded array against what the stage expects; return it unchanged.

    Raises:
        CodecError: when the dtype or shape differ, or (with ``finite``) an element is NaN or Inf.
    """
    if array.dtype.name != dtype:
        raise CodecError(f"{field}: dtype {array.dtype.name}, expected {dtype}")
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise CodecError(f"{field}: shape {tuple(array.shape)}, expected {tuple(shape)}")
    if finite and array.dtype.kind == "f" and not all_finite(array):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise CodecError(f"{field}: {bad} element(s) are NaN or Inf")
    return array


def all_finite(array: npt.NDArray[Any]) -> bool:
    """Whether no element is NaN or Inf, in one pass without a temporary.

    A NaN or Inf element makes the float64 sum NaN or Inf, so a finite sum proves every element
    finite; only a sum that overflowed (huge finite float64 values) needs the element-wise check.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.sum(array, dtype=np.float64))
    if math.isfinite(total):
        return True
    return bool(np.isfinite(array).all())
