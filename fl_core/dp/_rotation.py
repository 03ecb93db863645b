"""Randomized Hadamard rotation with a public per-round seed.

Kairouz, Liu, Steinke, ICML 2021 (arXiv 2102.06387), section 4.1, and Agarwal, Kairouz, Liu,
NeurIPS 2021 (arXiv 2110.04995), section 4: before rounding, each client multiplies its clipped
update by ``H D`` where ``D`` is a diagonal of random signs and ``H`` the normalised Walsh-Hadamard
matrix. The rotation keeps the L2 norm and spreads it evenly over the coordinates, so that every
coordinate of the sum is small and modular clipping rarely wraps. All clients and the server use
the same ``D`` in a round; it protects nothing secret, so its seed is public (the coordinator sends
it with the task). The signs are expanded from the seed with AES-128-CTR (randomgen's
``AESCounter``) under the key SHA-256("bulwark/dp/rotation/v1" || seed)[:16].
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import numpy.typing as npt
import randomgen  # type: ignore[import-untyped]

from fl_core.errors import ConfigError

_LABEL = b"bulwark/dp/rotation/v1"
MIN_SEED_BYTES = 16


def padded_length(dim: int) -> int:
    """Return the smallest power of two >= ``dim`` (the rotated vector's length)."""
    if dim < 1:
        raise ConfigError(f"dim must be an integer >= 1, got {dim}")
    return 1 << (dim - 1).bit_length()


def _signs(seed: bytes, length: int) -> npt.NDArray[np.float64]:
    if not isinstance(seed, bytes) or len(seed) < MIN_SEED_BYTES:
        raise ConfigError(f"rotation_seed must be at least {MIN_SEED_BYTES} bytes, got {seed!r}")
    return _cached_signs(seed, length)


@functools.lru_cache(maxsize=8)
def _cached_signs(seed: bytes, length: int) -> npt.NDArray[np.float64]:
    key = int.from_bytes(hashlib.sha256(_LABEL + seed).digest()[:16], "little")
    gen = np.random.Generator(randomgen.AESCounter(key=key))
    bits = gen.integers(0, 2, size=length, dtype=np.int8)
    signs = (1.0 - 2.0 * bits).astype(np.float64)
    signs.flags.writeable = False
    return signs


def fwht(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Normalised fast Walsh-Hadamard transform along the last axis (length a power of two).

    ``H / sqrt(n)`` is symmetric and orthonormal, so this function is its own inverse.
    """
    n = x.shape[-1]
    if n & (n - 1):
        raise ConfigError(f"the transform needs a power-of-two length, got {n}")
    lead = x.shape[:-1]
    y = np.array(x, dtype=np.float64, copy=True)
    h = 1
    while h < n:
        y = y.reshape(*lead, n // (2 * h), 2, h)
        a = y[..., 0, :]
        b = y[..., 1, :]
        y = np.stack((a + b, a - b), axis=-2)
        h *= 2
    out: npt.NDArray[np.float64] = y.reshape(*lead, n) / np.sqrt(n)
    return out


def rotate(x: npt.NDArray[np.float64], *, seed: bytes) -> npt.NDArray[np.float64]:
    """Pad the last axis of ``x`` with zeros to a power of two and apply ``H D``."""
    n = padded_length(x.shape[-1])
    padded = np.zeros((*x.shape[:-1], n), dtype=np.float64)
    padded[..., : x.shape[-1]] = x
    padded *= _signs(seed, n)  # the cached signs are read-only; padded is a fresh array
    return fwht(padded)


def unrotate(y: npt.NDArray[np.float64], *, seed: bytes, dim: int) -> npt.NDArray[np.float64]:
    """Invert :func:`rotate`: apply ``D H`` and drop the padding beyond ``dim``."""
    n = y.shape[-1]
    if n != padded_length(dim):
        raise ConfigError(
            f"rotated length {n} does not match dim {dim} (needs {padded_length(dim)})"
        )
    x = fwht(y) * _signs(seed, n)
    return x[..., :dim]
