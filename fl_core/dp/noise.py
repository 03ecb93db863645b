"""DP noise from a CSPRNG: float Gaussian (central placement) and integer Skellam (distributed).

Randomness policy (STYLE.md section 10): every sampler takes an ``rng: np.random.Generator``.
Production code gets one from :func:`csprng`, a numpy ``Generator`` over randomgen's
``AESCounter`` bit generator (AES-128 in counter mode, AES-NI where the CPU has it) keyed with
16 bytes from ``os.urandom``. Tests may pass ``csprng(seed=...)`` or any seeded ``Generator`` to
make a run reproducible; nothing here falls back to numpy's global or legacy generators.

Notes:
    Floating-point caveat (Mironov, CCS 2012; Jin et al., S&P 2022, arXiv 2112.05307): textbook
    float Gaussian samplers leave gaps in the set of reachable outputs, and one output can reveal
    the input. :func:`gaussian_noise` therefore uses the construction of Holohan and Braghin
    (ESORICS 2021, arXiv 2107.10138, section 5.1 with n = 2) that Opacus applies in
    ``secure_mode``: draw and discard one sample, add four N(0, std^2) samples and divide by 2. This
    raises the attack cost from about 2^53 to 2^159, but the output is still a float: anything
    that goes through secure aggregation uses integer noise instead (:func:`skellam_noise`).

    Integer noise: Skellam(mu, mu) is the difference of two independent Poisson(mu) variables
    (Agarwal, Kairouz, Liu, NeurIPS 2021, section 3). It has variance 2*mu and is closed under
    summation, so the sum of n clients' shares is Skellam(n*mu, n*mu). The Poisson draws use
    numpy's Poisson sampler (inversion for mu < 10, Hoermann's PTRS rejection otherwise) on the
    CSPRNG stream: the outputs are exact integers, but the sampler's running time depends on the
    values drawn. The vectorised call draws every coordinate of an update at once, so what an
    observer can time is one call over the whole vector, not a single coordinate.
"""

from __future__ import annotations

import math
import os
from typing import Final

import numpy as np
import numpy.typing as npt
import randomgen  # type: ignore[import-untyped]

from fl_core.errors import ConfigError

KEY_BYTES: Final = 16
"""AES-128 key length of the CSPRNG stream."""


def csprng(*, seed: bytes | None = None) -> np.random.Generator:
    """Return a numpy ``Generator`` over an AES-128-CTR stream.

    Args:
        seed: ``None`` (production) draws a fresh key from ``os.urandom``; 16 bytes give a
            reproducible stream for tests. Any other length is refused.

    Returns:
        A ``np.random.Generator`` whose bit generator is ``randomgen.AESCounter``.

    Raises:
        ConfigError: if ``seed`` is not ``None`` and not 16 bytes.
    """
    if seed is None:
        key_bytes = os.urandom(KEY_BYTES)
    elif isinstance(seed, bytes) and len(seed) == KEY_BYTES:
        key_bytes = seed
    else:
        raise ConfigError(f"seed must be None or {KEY_BYTES} bytes, got {seed!r}")
    key = int.from_bytes(key_bytes, "little")
    return np.random.Generator(randomgen.AESCounter(key=key))


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError(f"size must be an integer >= 0, got {size!r}")
    return size


def gaussian_noise(size: int, *, std: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Draw ``size`` samples of N(0, std^2) with the Holohan-Braghin construction (n = 2).

    Args:
        size: number of coordinates.
        std: standard deviation (>= 0; 0 gives zeros).
        rng: the random generator (:func:`csprng` in production).

    Returns:
        A float64 vector of length ``size``.

    Raises:
        ConfigError: if ``std`` is negative or not finite, or ``size`` is not an integer >= 0.
    """
    _check_size(size)
    if not math.isfinite(std) or std < 0:
        raise ConfigError(f"std must be a finite number >= 0, got {std}")
    if std == 0:
        return np.zeros(size, dtype=np.float64)
    rng.standard_normal(1)  # drawn and discarded, as in Opacus's secure_mode
    total = rng.standard_normal(size)
    for _ in range(3):
        total += rng.standard_normal(size)
    total *= std / 2.0
    return total


def skellam_noise(size: int, *, mu: float, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Draw ``size`` samples of the symmetric Skellam distribution Sk(mu, mu) (variance 2*mu).

    Args:
        size: number of coordinates.
        mu: the rate of each of the two Poisson variables (>= 0; 0 gives zeros).
        rng: the random generator (:func:`csprng` in production).

    Returns:
        An int64 vector of length ``size``.

    Raises:
        ConfigError: if ``mu`` is negative, not finite or above 1e15 (where int64 draws lose
            their exactness), or ``size`` is not an integer >= 0.
    """
    _check_size(size)
    if not math.isfinite(mu) or mu < 0 or mu > 1e15:
        raise ConfigError(f"mu must be a finite number in [0, 1e15], got {mu}")
    if mu == 0:
        return np.zeros(size, dtype=np.int64)
    plus = rng.poisson(mu, size).astype(np.int64)
    minus = rng.poisson(mu, size).astype(np.int64)
    return plus - minus
