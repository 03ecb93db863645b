"""Stochastic quantization of clipped floats into the ring, and the inverse for a sum.

A client maps each coordinate x of its update to an integer q in [0, 2^bits - 1]:

1. clip x to [-clip, clip];
2. scale affinely, y = (x + clip) / step with step = 2 * clip / (2^bits - 1), so y in
   [0, 2^bits - 1];
3. round stochastically: q = floor(y) + 1 with probability y - floor(y), else floor(y), computed
   as floor(y + U) for U uniform on [0, 1) from a caller-supplied ``np.random.Generator``
   (production seeds it from the OS CSPRNG; tests fix it).

The coordinator receives the ring sum S = sum_i q_i (mod 2^ring_bits) over n clients and returns
S * step - n * clip. The sum never wraps if n * (2^bits - 1) < 2^ring_bits, which
:func:`check_no_wraparound` enforces at configuration time (for the number of *summed* clients,
not the number of neighbours; see REFERENCES.md section 2.3 for the Flower bug this avoids).

The uniform U has 24 bits of resolution, so each rounding probability is exact to within 2^-24
(and, for bits > 28, to within the float64 spacing of y, at most 2^-12 at the 40-bit limit).

Error bound (tested): for every coordinate, with x_i already clipped,
``|dequantize_sum(S) - sum_i x_i| <= n * step`` (each client's rounding moves by less than one
step), and the rounding is unbiased: E[q_i] = y_i, so the expected error is zero. Float64 arithmetic
adds at most a few ulps of n * clip on top.

Notes:
    Stochastic rounding uses the injected generator rather than the global ``np.random`` state, so
    that the rounding randomness can enter a DP analysis (REFERENCES.md 2.3, 3.4) and so that
    tests are reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc.errors import ParameterError
from mpc.ring import RingVector, check_ring_bits, ring_dtype

_EXACT_ROUNDING_BITS = 28
MAX_QUANTIZATION_BITS = 40
"""Upper bound on ``bits``: y stays below 2^40, where float64 resolves 2^-12 of a step, so the
stochastic rounding is unbiased to within 2^-12 of a step."""


def quantization_step(*, clip: float, bits: int) -> tuple[float, float]:
    """Return ``(step, offset)`` such that a quantized value q stands for ``q * step + offset``.

    This is the single home of the scale and offset rule: :func:`quantize` subtracts ``offset``
    and multiplies by ``1 / step``, and :func:`dequantize_sum` multiplies by ``step`` and adds
    ``num_clients * offset``.

    Args:
        clip: the clipping bound c > 0; values are clipped to [-c, c].
        bits: quantized values lie in [0, 2^bits - 1].

    Returns:
        ``step = 2 * clip / (2^bits - 1)`` and ``offset = -clip``.

    Raises:
        ParameterError: if ``clip`` is not a positive finite number or ``bits`` is out of range.
    """
    _check_clip(clip)
    _check_bits(bits)
    return 2.0 * float(clip) / float((1 << bits) - 1), -float(clip)


def check_no_wraparound(*, num_clients: int, bits: int, ring_bits: int) -> None:
    """Refuse a configuration in which the sum of ``num_clients`` quantized values can wrap.

    Args:
        num_clients: the number of clients whose vectors are summed (the whole cohort).
        bits: quantized values lie in [0, 2^bits - 1].
        ring_bits: the ring is Z_2^ring_bits.

    Raises:
        ParameterError: naming the largest number of clients (or bits) that fits, if
            ``num_clients * (2^bits - 1) >= 2^ring_bits``.
    """
    check_ring_bits(ring_bits)
    _check_bits(bits)
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ParameterError(f"num_clients must be an int >= 1, got {num_clients!r}")
    largest = (1 << bits) - 1
    if num_clients * largest >= 1 << ring_bits:
        max_clients = ((1 << ring_bits) - 1) // largest
        max_bits = (((1 << ring_bits) - 1) // num_clients + 1).bit_length() - 1
        raise ParameterError(
            f"num_clients * (2^bits - 1) = {num_clients} * {largest} must be < 2^{ring_bits}: "
            f"the sum would wrap around the ring. With bits={bits} at most {max_clients} clients "
            f"fit; with {num_clients} clients use bits <= {max_bits} "
            f"or ring_bits=64"
        )


def quantize(
    x: npt.NDArray[np.floating[Any]],
    *,
    clip: float,
    bits: int,
    ring_bits: int,
    rng: np.random.Generator,
) -> RingVector:
    """Clip, scale and stochastically round a float vector into [0, 2^bits - 1] in the ring.

    Args:
        x: a one-dimensional float32 or float64 array (a flat model update).
        clip: the clipping bound c > 0.
        bits: quantized values lie in [0, 2^bits - 1]; at most ``MAX_QUANTIZATION_BITS`` and less
            than ``ring_bits``.
        ring_bits: 32 or 64; the output dtype is uint32 or uint64.
        rng: the generator for stochastic rounding (seed it from ``secrets`` in production).

    Returns:
        The quantized vector as ring elements.

    Raises:
        ParameterError: for a non-float, non-flat or non-finite input, or parameters out of range.
    """
    step, offset = quantization_step(clip=clip, bits=bits)
    check_ring_bits(ring_bits)
    if bits >= ring_bits:
        raise ParameterError(f"bits must be < ring_bits={ring_bits}, got {bits}")
    if not isinstance(rng, np.random.Generator):
        raise ParameterError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        raise ParameterError("x must be a float32 or float64 numpy array")
    if x.ndim != 1:
        raise ParameterError(f"x must be one-dimensional, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ParameterError("x contains NaN or infinite values; refuse to quantize them")
    largest = float((1 << bits) - 1)
    y = np.clip(x, -clip, clip, dtype=np.float64)
    y -= offset
    y *= 1.0 / step
    np.clip(y, 0.0, largest, out=y)  # float rounding must not leave [0, 2^bits - 1]
    # floor(y + U) with U uniform on [0, 1) is floor(y) + 1 with probability y - floor(y).
    # U is a float32 (resolution 2^-24), exactly representable when added to y.
    y += rng.random(y.shape[0], dtype=np.float32)
    np.floor(y, out=y)
    q = y.astype(ring_dtype(ring_bits))
    if bits > _EXACT_ROUNDING_BITS:  # y + U may round up to 2^bits when the float64 ulp > 2^-24
        np.minimum(q, (1 << bits) - 1, out=q)
    return RingVector(q)


def dequantize_sum(
    total: npt.NDArray[np.unsignedinteger[Any]],
    *,
    num_clients: int,
    clip: float,
    bits: int,
    ring_bits: int,
) -> npt.NDArray[np.float64]:
    """Map the ring sum of ``num_clients`` quantized vectors back to the sum of their floats.

    Args:
        total: the unmasked ring sum (uint32 or uint64, matching ``ring_bits``).
        num_clients: how many quantized vectors were summed.
        clip: the clipping bound used by every client.
        bits: the quantization bits used by every client.
        ring_bits: 32 or 64.

    Returns:
        ``total * step - num_clients * clip`` as float64: the sum of the clipped updates, within
        ``num_clients * step`` per coordinate.

    Raises:
        ParameterError: if the configuration can wrap (see :func:`check_no_wraparound`), if
            ``total`` has the wrong dtype or shape, or if a coordinate exceeds the largest possible
            sum (masks that did not cancel, for instance when clients saw different models).
    """
    check_no_wraparound(num_clients=num_clients, bits=bits, ring_bits=ring_bits)
    step, offset = quantization_step(clip=clip, bits=bits)
    dtype = ring_dtype(ring_bits)
    if not isinstance(total, np.ndarray) or total.dtype != dtype or total.ndim != 1:
        raise ParameterError(f"total must be a one-dimensional {dtype} array")
    largest = num_clients * ((1 << bits) - 1)
    if total.size and int(total.max()) > largest:
        raise ParameterError(
            f"total has a coordinate above {largest} = num_clients * (2^bits - 1): it is not a sum "
            f"of {num_clients} quantized vectors (did the masks cancel?)"
        )
    out = total.astype(np.float64)
    out *= step
    out += num_clients * offset
    return out


def _check_clip(clip: float) -> None:
    if isinstance(clip, bool) or not isinstance(clip, int | float):
        raise ParameterError(f"clip must be a positive finite float, got {clip!r}")
    if not math.isfinite(clip) or clip <= 0:
        raise ParameterError(f"clip must be a positive finite float, got {clip}")


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ParameterError(f"bits must be an int in [1, {MAX_QUANTIZATION_BITS}], got {bits!r}")
    if not 1 <= bits <= MAX_QUANTIZATION_BITS:
        raise ParameterError(f"bits must be in [1, {MAX_QUANTIZATION_BITS}], got {bits}")
