"""The rings Z_2^32 and Z_2^64 as unsigned numpy vectors.

An element of Z_2^b is stored as a ``uint32`` (b = 32) or ``uint64`` (b = 64) word; numpy's
unsigned arithmetic wraps modulo 2^b, so ring addition and subtraction are plain vectorised
``np.add`` / ``np.subtract`` with ``out=`` (no copies, no modulo operation). Every array that
enters the protocol is checked here for dtype, shape and length.
"""

from __future__ import annotations

from typing import Any, NewType

import numpy as np
import numpy.typing as npt

from mpc.errors import ParameterError

RING_BITS_ALLOWED = (32, 64)
"""Supported ring sizes: Z_2^32 (the default) and Z_2^64 (for sums that need more headroom)."""

RingVector = NewType("RingVector", "npt.NDArray[np.unsignedinteger[Any]]")
"""A flat vector of ring elements (uint32 or uint64): a quantized update, not yet masked."""

MaskedVector = NewType("MaskedVector", "npt.NDArray[np.unsignedinteger[Any]]")
"""A ring vector with secure-aggregation masks added: what a client uploads."""


def check_ring_bits(ring_bits: int, *, name: str = "ring_bits") -> int:
    """Return ``ring_bits`` if it is a supported ring size, else raise ``ParameterError``."""
    if isinstance(ring_bits, bool) or not isinstance(ring_bits, int):
        raise ParameterError(f"{name} must be an int in {RING_BITS_ALLOWED}, got {ring_bits!r}")
    if ring_bits not in RING_BITS_ALLOWED:
        raise ParameterError(f"{name} must be one of {RING_BITS_ALLOWED}, got {ring_bits}")
    return ring_bits


def ring_dtype(ring_bits: int) -> np.dtype[np.unsignedinteger[Any]]:
    """Return the numpy dtype (``uint32`` or ``uint64``) that holds elements of Z_2^ring_bits."""
    check_ring_bits(ring_bits)
    return np.dtype(np.uint32) if ring_bits == 32 else np.dtype(np.uint64)


def zeros(length: int, *, ring_bits: int) -> RingVector:
    """Return the zero vector of ``length`` ring elements."""
    if length < 0:
        raise ParameterError(f"length must be >= 0, got {length}")
    return RingVector(np.zeros(length, dtype=ring_dtype(ring_bits)))


def check_ring_vector(
    vector: object, *, ring_bits: int, length: int, name: str = "vector"
) -> RingVector:
    """Check that ``vector`` is a flat ring vector of the expected dtype and length.

    Every value of a ``uint32``/``uint64`` array is already a ring element, so dtype and shape
    are all that can be wrong.

    Args:
        vector: the object to check.
        ring_bits: 32 or 64.
        length: the expected number of elements.
        name: how to call the object in an error message.

    Returns:
        The same array, typed as a ``RingVector``.

    Raises:
        ParameterError: if it is not a numpy array, has the wrong dtype, is not one-dimensional,
            or has the wrong length.
    """
    dtype = ring_dtype(ring_bits)
    if not isinstance(vector, np.ndarray):
        raise ParameterError(
            f"{name} must be a numpy array of {dtype}, got {type(vector).__name__}"
        )
    if vector.dtype != dtype:
        raise ParameterError(f"{name} has dtype {vector.dtype}, ring Z_2^{ring_bits} needs {dtype}")
    if vector.ndim != 1:
        raise ParameterError(f"{name} must be one-dimensional, got shape {vector.shape}")
    if vector.shape[0] != length:
        raise ParameterError(f"{name} has length {vector.shape[0]}, expected {length}")
    return RingVector(vector)


def add_into(total: npt.NDArray[Any], other: npt.NDArray[Any]) -> None:
    """Add ``other`` to ``total`` in place, modulo 2^bits (numpy unsigned wraparound)."""
    np.add(total, other, out=total)


def sub_into(total: npt.NDArray[Any], other: npt.NDArray[Any]) -> None:
    """Subtract ``other`` from ``total`` in place, modulo 2^bits (numpy unsigned wraparound)."""
    np.subtract(total, other, out=total)


def ring_sum(vectors: list[npt.NDArray[Any]], *, ring_bits: int, length: int) -> RingVector:
    """Return the sum of ``vectors`` modulo 2^ring_bits (zero vector for an empty list)."""
    total = zeros(length, ring_bits=ring_bits)
    for vector in vectors:
        add_into(total, check_ring_vector(vector, ring_bits=ring_bits, length=length))
    return total
