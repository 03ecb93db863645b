"""What leaves the key holder: decrypted sums, flooded and rounded (and optionally DP-noised).

Threat model: a raw CKKS decryption contains the encryption noise, which is linear in the secret
key; anyone who sees the ciphertexts and the raw decryptions can recover the key (Li and
Micciancio, "On the Security of Homomorphic Encryption on Approximate Numbers", EUROCRYPT 2021,
ePrint 2020/1533). The key holder therefore never releases a raw CKKS decryption.

Steps for the CKKS part (`flood_and_round`):
    1. bound the key-dependent noise of the sum: ``B = n * B_fresh``, with the CKKS fresh-
       encryption bound of Cheon, Kim, Kim and Song (ASIACRYPT 2017, Lemma 1),
       ``B_fresh = (8 sqrt(2) sigma N + 6 sigma sqrt(N) + 16 sigma sqrt(h N)) / scale`` with
       sigma = 3.2 and h = N (a conservative ternary-secret weight);
    2. add noise drawn uniformly from [-W, W], W = 2^s * B, from the OS CSPRNG. For any two noise
       values of size at most B the outputs are within statistical distance 2^-(s+1) per value
       (the noise-flooding lemma), so the release hides the noise (IND-CPA^D, Li-Micciancio
       Section 5). The key holder takes s from the job (`flood_bits_for`): the total distance
       over every value of every decryption the job can make is at most 2^-64;
    3. round to the published grid (post-processing), which removes floating-point low bits.

BFV decryptions are exact and carry no key-dependent noise, so they are released as they are
(REFERENCES 4.2). With a `DPSpec`, discrete Gaussian noise is added to every sufficient statistic
(`he._dgauss`) with record-level sensitivities from the spec's clipping ranges; the rho-zCDP
budget is split evenly across the blocks (count, histograms, sums, products).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from he import _wire
from he._dgauss import discrete_gaussian
from he._spec_dict import spec_from_dict
from he.envelope import MAX_ID_LEN, MAX_ROUND
from he.errors import DecodeError, SpecError
from he.params import HEParams
from he.spec import Spec, StatsSpec, real_scales, vector_lengths

DEFAULT_FLOOD_BITS = 40
MIN_FLOOD_BITS = 20
MAX_FLOOD_BITS = 128
TOTAL_DISTANCE_BITS = 64
"""The job's whole release budget: total statistical distance at most 2^-64."""
ENCRYPTION_NOISE_SIGMA = 3.2
GRID_BELOW_FLOOD_BITS = 8
FP_GRID_BITS = 48  # grid at least largest * 2^-48, so int64 and float64 round exactly
FP_RELATIVE_ERROR = 2.0**-45  # SEAL's double FFT encode/decode; measured 2^-48 to 2^-50


def fresh_noise_bound(params: HEParams) -> float:
    """Bound on the key-dependent noise of one fresh CKKS encryption, in value units."""
    n = params.poly_modulus_degree
    sigma = ENCRYPTION_NOISE_SIGMA
    coeff = 8 * math.sqrt(2) * sigma * n + 6 * sigma * math.sqrt(n) + 16 * sigma * n
    return coeff / 2.0 ** (params.scale_bits or 0)


def flood_bits_for(*, values: int, decryptions: int) -> int:
    """The flooding s that keeps a job's total statistical distance at most 2^-64.

    Each released value is within statistical distance 2^-(s+1) of a simulation that does not
    depend on the secret key (`flood_and_round`, step 2); distances add over values and over
    decryptions, so for ``values`` CKKS values per decryption and at most ``decryptions``
    decryptions under one key the total is ``values * decryptions * 2^-(s+1)``. It is at most
    2^-64 when ``s >= 63 + log2(values * decryptions)``; this returns the smallest such
    integer.

    Raises:
        SpecError: a count below 1, or an s beyond MAX_FLOOD_BITS.
    """
    if values < 1 or decryptions < 1:
        raise SpecError(f"values and decryptions must be >= 1, got {values}, {decryptions}")
    bits = TOTAL_DISTANCE_BITS - 1 + math.ceil(math.log2(values * decryptions))
    if bits > MAX_FLOOD_BITS:
        raise SpecError(f"flooding would need s = {bits} bits, above {MAX_FLOOD_BITS}")
    return bits


def statistical_distance(*, values: int, flood_bits: int) -> float:
    """The statistical distance one release of ``values`` values flooded with s bits may add."""
    return values * 2.0 ** -(flood_bits + 1)


def _csprng_bytes(size: int) -> bytes:
    """``size`` bytes of an AES-256-CTR keystream under a fresh key from the OS CSPRNG.

    A CSPRNG stream seeded by ``os.urandom``: several times faster than reading every byte from
    the kernel, which mattered for the half a megabyte a 65,536-value release floods with.
    """
    encryptor = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor()
    return encryptor.update(bytes(size)) + encryptor.finalize()


def _uniform_symmetric(size: int, half_width: float) -> npt.NDArray[np.float64]:
    """Uniform values in (-half_width, half_width) from a CSPRNG stream (53-bit resolution)."""
    words = np.frombuffer(_csprng_bytes(8 * size), dtype="<u8") >> np.uint64(11)
    unit = (words.astype(np.float64) + 0.5) / 2.0**53
    return (2.0 * unit - 1.0) * half_width


def flood_and_round(
    values: npt.NDArray[np.float64], *, noise_bound: float, flood_bits: int
) -> tuple[npt.NDArray[np.float64], float, float]:
    """Flood the key-dependent noise and round to a grid.

    Returns:
        (released values, grid, tolerance) where tolerance bounds |released - true sum| apart from
        DP noise: noise_bound + flooding half-width + grid/2 + floating-point error.
    """
    if not MIN_FLOOD_BITS <= flood_bits <= MAX_FLOOD_BITS:
        raise SpecError(f"flood_bits must lie in [{MIN_FLOOD_BITS}, {MAX_FLOOD_BITS}]")
    if values.size == 0:
        return values.copy(), 0.0, 0.0
    half_width = noise_bound * 2.0**flood_bits
    noisy = values + _uniform_symmetric(values.size, half_width)
    largest = float(np.max(np.abs(noisy)))
    grid_exp = max(
        math.ceil(math.log2(half_width)) - GRID_BELOW_FLOOD_BITS,
        math.ceil(math.log2(largest + half_width)) - FP_GRID_BITS,
    )
    grid = 2.0**grid_exp
    released = np.rint(noisy / grid) * grid
    fp_error = float(np.max(np.abs(values))) * FP_RELATIVE_ERROR
    return released, grid, noise_bound + half_width + grid / 2 + fp_error


@dataclass(frozen=True, slots=True)
class DPNoise:
    """What DP noise a release carries, for the owners' ledgers."""

    epsilon: float
    delta: float
    rho: float
    sigmas: dict[str, float]


def _blocks(spec: StatsSpec) -> list[tuple[str, bool, slice, float]]:
    """(name, is_integer, index range, L2 sensitivity) per sufficient-statistic block."""
    layout = spec.layout
    n_real_cols = len(layout.real_columns)
    out: list[tuple[str, bool, slice, float]] = [("count", True, slice(0, 1), 1.0)]
    if spec.histograms:
        out.append(
            ("histograms", True, slice(1, layout.n_integers), math.sqrt(len(spec.histograms)))
        )
    if layout.n_reals:
        bounds = spec.real_bounds()
        sums = bounds[:n_real_cols]
        prods = bounds[n_real_cols:]
        out.append(("sums", False, slice(0, n_real_cols), math.sqrt(sum(b * b for b in sums))))
        if prods:
            sens = math.sqrt(sum(b * b for b in prods))
            out.append(("products", False, slice(n_real_cols, layout.n_reals), sens))
    return out


def add_dp_noise(
    spec: StatsSpec, integers: npt.NDArray[np.int64], reals: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], DPNoise]:
    """Add discrete Gaussian noise for ``spec.dp`` (rho-zCDP split evenly over the blocks).

    Notes:
        Integer blocks: sensitivity Delta, sigma^2 = Delta^2 / (2 rho_b) (CKS20 Theorem 14).
        Real blocks are rounded to a grid g = 2^floor(log2(sigma / 1024)) first; rounding moves
        each coordinate by at most one grid step, so the sensitivity in grid units is
        Delta / g + sqrt(d) for a block of d values.
    """
    if spec.dp is None:
        raise SpecError("the spec has no dp table")
    blocks = _blocks(spec)
    rho_b = spec.dp.rho / len(blocks)
    ints = integers.copy()
    out = reals.copy()
    sigmas: dict[str, float] = {}
    for name, is_int, where, sens in blocks:
        if is_int:
            sigma = sens / math.sqrt(2 * rho_b)
            ints[where] += np.array(
                [discrete_gaussian(sigma) for _ in range(where.stop - where.start)], dtype=np.int64
            )
            sigmas[name] = sigma
            continue
        approx = sens / math.sqrt(2 * rho_b)
        grid = 2.0 ** math.floor(math.log2(approx / 1024))
        d = where.stop - where.start
        sigma_grid = (sens / grid + math.sqrt(d)) / math.sqrt(2 * rho_b)
        units = np.rint(out[where] / grid)
        noise = np.array([discrete_gaussian(sigma_grid) for _ in range(d)], dtype=np.float64)
        out[where] = (units + noise) * grid
        sigmas[name] = sigma_grid * grid
    return ints, out, DPNoise(spec.dp.epsilon, spec.dp.delta, spec.dp.rho, sigmas)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Release:
    """Released sums of one aggregate: exact integers (BFV) and flooded, rounded reals (CKKS).

    Attributes:
        integers: the BFV sums (count, histogram bins), exact unless DP noise was added.
        reals: the CKKS sums, within `tolerances` of the true sums (plus DP noise if any).
        real_tolerance: bound on |released - true| without DP noise, in units of each slot's
            scale (`he.spec.real_scales`); `tolerances` gives it per value.
        grid: the rounding grid of the (scaled) reals.
        flood_bits: s, the statistical security of the flooding (2^-(s+1) per value).
        dp: the DP noise added, or None.
    """

    job_id: str
    round: int
    spec: Spec
    contributors: tuple[str, ...]
    integers: npt.NDArray[np.int64] = field(repr=False)
    reals: npt.NDArray[np.float64] = field(repr=False)
    real_tolerance: float
    grid: float
    flood_bits: int
    dp: DPNoise | None = None

    def tolerances(self) -> npt.NDArray[np.float64]:
        """Per real value, the bound on |released - true sum| (DP noise excluded)."""
        return self.real_tolerance * real_scales(self.spec)

    def vector(self) -> npt.NDArray[np.float64]:
        """The released sum of an encrypted vector aggregation (a copy)."""
        if isinstance(self.spec, StatsSpec):
            raise SpecError("this release holds statistics; use finalize_statistics")
        return self.reals.copy()

    def to_bytes(self) -> bytes:
        """The RELEASE envelope (values as little-endian int64/float64 blobs)."""
        header: dict[str, Any] = {
            "job_id": self.job_id,
            "round": self.round,
            "spec": self.spec.to_dict(),
            "contributors": list(self.contributors),
            "real_tolerance": self.real_tolerance,
            "grid": self.grid,
            "flood_bits": self.flood_bits,
        }
        if self.dp is not None:
            header["dp"] = {
                "epsilon": self.dp.epsilon,
                "delta": self.dp.delta,
                "rho": self.dp.rho,
                "sigmas": self.dp.sigmas,
            }
        blobs = [self.integers.astype("<i8").tobytes(), self.reals.astype("<f8").tobytes()]
        return _wire.encode(_wire.Kind.RELEASE, header, blobs)

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int = 2**34) -> Release:
        """Parse a RELEASE envelope, checking dtype sizes against the spec.

        Raises:
            DecodeError: malformed bytes, wrong sizes or non-finite values.
        """
        what = "release"
        env = _wire.decode(
            data, max_bytes=max_bytes, max_blobs=2, max_blob_bytes=max_bytes, what=what
        )
        if env.kind is not _wire.Kind.RELEASE or len(env.blobs) != 2:
            raise DecodeError("expected a release with two value blobs")
        h = env.header
        try:
            spec = spec_from_dict(_wire.get_dict(h, "spec", what=what))
        except SpecError as exc:
            raise DecodeError(f"release spec is invalid: {exc}") from exc
        n_int, n_real = vector_lengths(spec)
        if len(env.blobs[0]) != 8 * n_int or len(env.blobs[1]) != 8 * n_real:
            raise DecodeError(f"release must hold {n_int} int64 and {n_real} float64 values")
        reals = np.frombuffer(env.blobs[1], dtype="<f8").astype(np.float64)
        if not np.all(np.isfinite(reals)):
            raise DecodeError("release holds non-finite values")
        contributors = _wire.get_list(h, "contributors", what=what, max_len=2**20)
        if not all(isinstance(c, str) and 0 < len(c) <= MAX_ID_LEN for c in contributors):
            raise DecodeError("release contributors must be owner ids")
        dp = None
        if "dp" in h:
            raw = _wire.get_dict(h, "dp", what=what)
            sigmas = _wire.get_dict(raw, "sigmas", what=what)
            dp = DPNoise(
                epsilon=_wire.get_float(raw, "epsilon", what=what),
                delta=_wire.get_float(raw, "delta", what=what),
                rho=_wire.get_float(raw, "rho", what=what),
                sigmas={str(k): _wire.get_float(sigmas, k, what=what) for k in sigmas},
            )
        return cls(
            job_id=_wire.get_str(h, "job_id", what=what, max_len=MAX_ID_LEN),
            round=_wire.get_int(h, "round", what=what, low=0, high=MAX_ROUND),
            spec=spec,
            contributors=tuple(contributors),
            integers=np.frombuffer(env.blobs[0], dtype="<i8").astype(np.int64),
            reals=reals,
            real_tolerance=_wire.get_float(h, "real_tolerance", what=what),
            grid=_wire.get_float(h, "grid", what=what),
            flood_bits=_wire.get_int(h, "flood_bits", what=what, low=0, high=MAX_FLOOD_BITS),
            dp=dp,
        )
