"""HE parameters: CKKS and BFV presets checked against the HomomorphicEncryption.org table.

Every `HEParams` is validated when it is built, so an insecure or inconsistent setting cannot exist
as a value: the error names the field and the limit it broke.

Notes:
    Security: the maximum total ``coeff_modulus`` bits per ``poly_modulus_degree`` come from the
    HomomorphicEncryption.org standard (Albrecht et al., "Homomorphic Encryption Security
    Standard", 2018), ternary secret, error standard deviation 3.2, as encoded in Microsoft SEAL's
    ``native/src/seal/util/hestdparms.h``. SEAL (and so TenSEAL) refuses the same settings at
    context creation; checking here first gives an error that names the limit.

    This package only ever *adds* ciphertexts (owners compute their sufficient statistics in the
    clear, the coordinator sums). CKKS presets therefore use ``multiplicative_depth=0``, and the
    scale is a fixed-point precision, not tied to the size of the middle primes: the decrypted
    noise is about ``2^19.5 / 2^scale_bits`` per addend (see `he.release`), and the data modulus
    leaves ``data_modulus_bits - scale_bits`` bits for the magnitude of a sum. When
    ``multiplicative_depth > 0`` the usual rule applies: every middle prime must equal the scale
    (REFERENCES 4.2: with scale 2^30 on 40-bit primes one multiplication returns noise).

    BFV sums integers exactly modulo the plain modulus t. TenSEAL decodes to the centred range, so
    no sum may exceed ``(t - 1) // 2`` in absolute value; statistics specs check this at
    configuration time against the largest possible sum. t must be a prime with
    ``t = 1 mod 2N`` so that batching (one value per slot) is available.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from he.errors import InsecureParameters, ParameterError

__all__ = [
    "BFV_4096",
    "BFV_8192",
    "CKKS_8192",
    "DEFAULT_STATS_PARAMS",
    "HEParams",
    "MAX_COEFF_MODULUS_BITS",
    "Scheme",
    "max_coeff_modulus_bits",
]


class Scheme(StrEnum):
    """The two TenSEAL schemes this package uses."""

    CKKS = "ckks"
    BFV = "bfv"


# HomomorphicEncryption.org standard, classical security, ternary secret (SEAL hestdparms.h).
MAX_COEFF_MODULUS_BITS: dict[int, dict[int, int]] = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}
MIN_PRIME_BITS = 17
MAX_PRIME_BITS = 60  # SEAL's limit on one coefficient-modulus prime (SEAL_USER_MOD_BIT_COUNT_MAX)
MIN_SCALE_BITS = 20
MAX_SCALE_BITS = 90  # beyond this, SEAL's double-precision encoder loses the values
MIN_VALUE_HEADROOM_BITS = 20  # CKKS: data modulus bits left above the scale for a sum's magnitude
MIN_BFV_BUDGET_BITS = 48  # BFV: data modulus bits left above log2(t) for fresh noise and additions
VALUE_SAFETY_BITS = 4  # CKKS: keep |sum| * scale this many bits below the data modulus


@dataclass(frozen=True, slots=True, kw_only=True)
class HEParams:
    """Encryption parameters for one scheme.

    Attributes:
        scheme: CKKS (approximate reals) or BFV (exact integers).
        poly_modulus_degree: N, a power of two from 1024 to 32768.
        coeff_mod_bit_sizes: bit sizes of the coefficient-modulus primes; the last is SEAL's special
            prime, the others form the data modulus.
        scale_bits: CKKS only: log2 of the encoding scale.
        plain_modulus: BFV only: the plaintext modulus t (prime, t = 1 mod 2N).
        multiplicative_depth: CKKS only: ciphertext multiplications the parameters must support.
        security_level: classical security bits required (128, 192 or 256).
    """

    scheme: Scheme
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int | None = None
    plain_modulus: int | None = None
    multiplicative_depth: int = 0
    security_level: int = 128

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, Scheme):
            raise ParameterError(f"scheme must be one of {[s.value for s in Scheme]}")
        if self.security_level not in MAX_COEFF_MODULUS_BITS:
            raise ParameterError(
                f"security_level must be one of {sorted(MAX_COEFF_MODULUS_BITS)}, "
                f"got {self.security_level!r}"
            )
        table = MAX_COEFF_MODULUS_BITS[self.security_level]
        if not _is_int(self.poly_modulus_degree) or self.poly_modulus_degree not in table:
            raise ParameterError(
                f"poly_modulus_degree must be one of {sorted(table)}, "
                f"got {self.poly_modulus_degree!r}"
            )
        sizes = self.coeff_mod_bit_sizes
        if not isinstance(sizes, tuple) or len(sizes) < 2 or not all(_is_int(b) for b in sizes):
            raise ParameterError(
                "coeff_mod_bit_sizes must be a tuple of at least 2 integers (data primes, then "
                f"the special prime), got {sizes!r}"
            )
        for bits in sizes:
            if not MIN_PRIME_BITS <= bits <= MAX_PRIME_BITS:
                raise ParameterError(
                    f"coeff_mod_bit_sizes entries must lie in [{MIN_PRIME_BITS}, "
                    f"{MAX_PRIME_BITS}] bits, got {bits}"
                )
        check_security(
            poly_modulus_degree=self.poly_modulus_degree,
            total_bits=sum(sizes),
            security_level=self.security_level,
        )
        if not _is_int(self.multiplicative_depth) or self.multiplicative_depth < 0:
            raise ParameterError(
                f"multiplicative_depth must be an integer >= 0, got {self.multiplicative_depth!r}"
            )
        if self.scheme is Scheme.CKKS:
            self._check_ckks()
        else:
            self._check_bfv()

    def _check_ckks(self) -> None:
        if self.plain_modulus is not None:
            raise ParameterError("plain_modulus must be None for CKKS (it is a BFV parameter)")
        scale = self.scale_bits
        if scale is None or not _is_int(scale):
            raise ParameterError("scale_bits is required for CKKS and must be an integer")
        upper = min(MAX_SCALE_BITS, self.data_modulus_bits - MIN_VALUE_HEADROOM_BITS)
        if not MIN_SCALE_BITS <= scale <= upper:
            raise ParameterError(
                f"scale_bits must lie in [{MIN_SCALE_BITS}, {upper}] (at most {MAX_SCALE_BITS}, "
                f"and {MIN_VALUE_HEADROOM_BITS} bits below the {self.data_modulus_bits}-bit data "
                f"modulus), got {scale}"
            )
        depth = self.multiplicative_depth
        middle = self.coeff_mod_bit_sizes[1:-1]
        if depth > len(middle):
            raise ParameterError(
                f"multiplicative_depth {depth} needs at least {depth} middle primes in "
                f"coeff_mod_bit_sizes, got {len(middle)}"
            )
        if depth > 0 and any(bits != scale for bits in middle):
            raise ParameterError(
                f"with multiplicative_depth > 0 every middle prime must equal scale_bits={scale} "
                f"(rescaling divides by them), got middle primes {middle}"
            )

    def _check_bfv(self) -> None:
        if self.scale_bits is not None:
            raise ParameterError("scale_bits must be None for BFV (it is a CKKS parameter)")
        if self.multiplicative_depth != 0:
            raise ParameterError("multiplicative_depth must be 0 for BFV in this package")
        t = self.plain_modulus
        if t is None or not _is_int(t) or t < 3:
            raise ParameterError(f"plain_modulus is required for BFV and must be >= 3, got {t!r}")
        two_n = 2 * self.poly_modulus_degree
        if t.bit_length() > MAX_PRIME_BITS or not _is_prime(t) or t % two_n != 1:
            raise ParameterError(
                f"plain_modulus must be a prime of at most {MAX_PRIME_BITS} bits with "
                f"plain_modulus % {two_n} == 1 (batching), got {t}"
            )
        budget = self.data_modulus_bits - t.bit_length()
        if budget < MIN_BFV_BUDGET_BITS:
            raise ParameterError(
                f"plain_modulus of {t.bit_length()} bits leaves {budget} bits of noise budget in "
                f"the {self.data_modulus_bits}-bit data modulus; at least {MIN_BFV_BUDGET_BITS} "
                "are required"
            )

    @property
    def data_modulus_bits(self) -> int:
        """Bits of the data modulus (all primes but SEAL's special prime)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def slot_count(self) -> int:
        """Values one ciphertext holds: N/2 for CKKS, N for BFV."""
        if self.scheme is Scheme.CKKS:
            return self.poly_modulus_degree // 2
        return self.poly_modulus_degree

    @property
    def max_abs_value(self) -> float:
        """CKKS: the largest magnitude any (summed) slot value may reach."""
        if self.scale_bits is None:
            raise ParameterError("max_abs_value is defined for CKKS parameters only")
        return float(2 ** (self.data_modulus_bits - self.scale_bits - VALUE_SAFETY_BITS))

    @property
    def max_abs_integer(self) -> int:
        """BFV: the largest magnitude a (summed) slot value may reach without wrapping."""
        if self.plain_modulus is None:
            raise ParameterError("max_abs_integer is defined for BFV parameters only")
        return (self.plain_modulus - 1) // 2

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the inverse of `from_dict`)."""
        return {
            "scheme": self.scheme.value,
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
            "plain_modulus": self.plain_modulus,
            "multiplicative_depth": self.multiplicative_depth,
            "security_level": self.security_level,
        }

    @classmethod
    def from_dict(cls, data: Any) -> HEParams:
        """Build and validate parameters from a plain dict (a TOML table or decoded JSON).

        Raises:
            ParameterError: on unknown keys, wrong types or values outside the limits.
        """
        if not isinstance(data, dict):
            raise ParameterError("HE parameters must be a table")
        known = {
            "scheme",
            "poly_modulus_degree",
            "coeff_mod_bit_sizes",
            "scale_bits",
            "plain_modulus",
            "multiplicative_depth",
            "security_level",
        }
        unknown = set(data) - known
        if unknown:
            raise ParameterError(f"unknown HE parameter(s): {sorted(unknown)}")
        try:
            scheme = Scheme(str(data.get("scheme")))
        except ValueError as exc:
            raise ParameterError(f"scheme must be one of {[s.value for s in Scheme]}") from exc
        sizes = data.get("coeff_mod_bit_sizes")
        if not isinstance(sizes, list | tuple):
            raise ParameterError("coeff_mod_bit_sizes must be a list of integers")
        return cls(
            scheme=scheme,
            poly_modulus_degree=data.get("poly_modulus_degree"),  # type: ignore[arg-type]
            coeff_mod_bit_sizes=tuple(sizes),
            scale_bits=data.get("scale_bits"),
            plain_modulus=data.get("plain_modulus"),
            multiplicative_depth=data.get("multiplicative_depth", 0),
            security_level=data.get("security_level", 128),
        )


def max_coeff_modulus_bits(*, poly_modulus_degree: int, security_level: int = 128) -> int:
    """The HomomorphicEncryption.org limit on total coefficient-modulus bits.

    Raises:
        ParameterError: for a degree or level outside the table.
    """
    table = MAX_COEFF_MODULUS_BITS.get(security_level)
    if table is None or poly_modulus_degree not in table:
        raise ParameterError(
            f"no HomomorphicEncryption.org entry for poly_modulus_degree={poly_modulus_degree}, "
            f"security_level={security_level}"
        )
    return table[poly_modulus_degree]


def check_security(*, poly_modulus_degree: int, total_bits: int, security_level: int) -> None:
    """Refuse a total modulus size above the table's limit for the degree and level.

    Raises:
        InsecureParameters: naming the limit that was exceeded.
    """
    limit = max_coeff_modulus_bits(
        poly_modulus_degree=poly_modulus_degree, security_level=security_level
    )
    if total_bits > limit:
        raise InsecureParameters(
            f"coeff_mod_bit_sizes sum to {total_bits} bits; the HomomorphicEncryption.org "
            f"{security_level}-bit limit for poly_modulus_degree {poly_modulus_degree} is {limit}"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3e24 (bases 2..41), enough for 60-bit moduli."""
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    if n < 2:
        return False
    for p in bases:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


CKKS_8192 = HEParams(
    scheme=Scheme.CKKS,
    poly_modulus_degree=8192,
    coeff_mod_bit_sizes=(60, 40, 40, 60),
    scale_bits=90,
)
"""CKKS, N=8192 (4096 slots), 200 of 218 bits, scale 2^90, sums up to 2^46 in magnitude."""

BFV_4096 = HEParams(
    scheme=Scheme.BFV,
    poly_modulus_degree=4096,
    coeff_mod_bit_sizes=(36, 36, 37),
    plain_modulus=1032193,
)
"""BFV, N=4096 (4096 slots), 109 of 109 bits, t=1032193: exact sums up to 516096."""

BFV_8192 = HEParams(
    scheme=Scheme.BFV,
    poly_modulus_degree=8192,
    coeff_mod_bit_sizes=(60, 50, 50, 58),
    plain_modulus=1099511480321,
)
"""BFV, N=8192 (8192 slots), 218 of 218 bits, 40-bit t: exact sums up to 549755740160."""

DEFAULT_STATS_PARAMS: tuple[HEParams, HEParams] = (CKKS_8192, BFV_4096)
"""A statistics job: CKKS for real moments, BFV for counts and histograms."""
