"""Real values in BFV's exact plaintext ring: fixed-point encoding with a no-wrap bound.

Why: a CKKS decryption carries noise that depends on the secret key, and SEAL decodes it in
double precision, so a release must be flooded with noise 2^s times larger than that noise
*and* than the floating-point decoding error; at s >= 64 (what a job's 2^-64 total distance
needs, `he.release.flood_bits_for`) the released sums keep almost no precision. BFV decryption
is exact: the key holder obtains the sum of the owners' plaintexts modulo t and nothing else,
so there is no key-dependent noise to flood and no statistical distance to spend. Real values
are therefore encoded as integers ``round(v * 2^f)`` (each owner rounds once, error at most 1/2
of a unit), summed exactly in Z_t, and decoded as ``sum / 2^f``.

No wrap: a slot whose honest total is at most L in magnitude, summed over at most ``max_owners``
owners, stays below ``L * 2^f + max_owners / 2``; `fraction_bits` picks the largest f that
keeps this at most ``(t - 1) / 2``, so a centred decryption is the true integer sum.

When a context has CKKS parameters, real values use CKKS as before (flooded); without them,
they use these BFV parameters (`real_params`).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from he.errors import SpecError
from he.params import HEParams, Scheme

MIN_FRACTION_BITS = 10
"""Fewer fraction bits than this would make the sums too coarse to be useful: refused."""
MAX_FRACTION_BITS = 52
"""v * 2^f stays exactly representable in float64 for |v| up to 1 (more would not add)."""


def real_params(params: tuple[HEParams, ...]) -> HEParams:
    """The parameters real values are encrypted under: CKKS if present, else BFV fixed point.

    Raises:
        SpecError: neither scheme is in ``params``.
    """
    by_scheme = {p.scheme: p for p in params}
    chosen = by_scheme.get(Scheme.CKKS) or by_scheme.get(Scheme.BFV)
    if chosen is None:
        raise SpecError("real values need CKKS or BFV parameters in the public context")
    return chosen


def fraction_bits(bfv: HEParams, *, limit: float, max_owners: int) -> int:
    """The largest f with ``limit * 2^f + max_owners / 2 <= (t - 1) / 2`` (see module notes).

    Args:
        bfv: BFV parameters (their plain modulus t).
        limit: the largest magnitude the honest total of one slot can reach.
        max_owners: the most owners a sum may hold (each rounds once).

    Raises:
        SpecError: fewer than MIN_FRACTION_BITS fraction bits fit.
    """
    room = bfv.max_abs_integer - max_owners / 2
    bits = (
        min(MAX_FRACTION_BITS, math.floor(math.log2(room / _check_limit(limit))))
        if room > 0
        else -1
    )
    if bits < MIN_FRACTION_BITS:
        raise SpecError(
            f"real sums up to {limit:.3g} over {max_owners} owners leave {bits} fraction bits in "
            f"BFV plain modulus {bfv.plain_modulus}; at least {MIN_FRACTION_BITS} needed (use a "
            "larger plain modulus, fewer rows or owners)"
        )
    return bits


def _check_limit(limit: float) -> float:
    """``limit`` checked to be a finite positive bound."""
    if not (math.isfinite(limit) and limit > 0):
        raise SpecError(f"a real-value bound must be finite and > 0, got {limit}")
    return limit


def encode_fixed(values: npt.NDArray[np.float64], *, bits: int) -> npt.NDArray[np.int64]:
    """``round(v * 2^bits)`` as int64 (the caller has checked |v| against the spec)."""
    return np.rint(values * 2.0**bits).astype(np.int64)


def decode_fixed(values: npt.NDArray[np.int64], *, bits: int) -> npt.NDArray[np.float64]:
    """``v / 2^bits`` (exact for the sums `fraction_bits` allows)."""
    return values.astype(np.float64) / 2.0**bits


def fixed_tolerance(*, owners: int, bits: int) -> float:
    """Bound on |decoded sum - true sum| per slot: each owner's rounding, 1/2 unit."""
    return owners * 0.5 * 2.0**-bits
