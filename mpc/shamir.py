"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^256 + 297).

A secret s (32 bytes, read as a big-endian integer below 2^256 < p) is the constant term of a
random polynomial f of degree t - 1 over GF(p); the share of holder x (a nonzero field element:
in the protocol, the holder's participant index) is (x, f(x)). Any t shares determine f(0) = s
by Lagrange interpolation at zero; any t - 1 shares are uniformly distributed whatever s is
(Shamir, "How to share a secret", CACM 1979).

Used by SecAgg (Bonawitz et al. CCS 2017, section 4, round 1) to share each client's self-mask
seed b_u and masking secret key s_u^SK among its neighbours, t-out-of-|holders|.

Speed: Lagrange coefficients depend only on which holders' shares are combined, so
:func:`lagrange_at_zero` computes them once per set of holders and :func:`combine_with` applies
them to every secret of the round with t multiplications each (Flower instead re-interpolates
every 16-byte chunk of every secret over GF(2^128) in pure Python; REFERENCES.md "Performance
anchors").

Notes:
    p = 2^256 + 297 is the smallest prime above 2^256 (checked by the tests), so every 32-byte
    secret is a field element and a share's value fits 33 bytes. Polynomial coefficients come from
    ``secrets.randbelow(p)``, i.e. the OS CSPRNG, uniformly on GF(p).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from mpc.errors import InsufficientSharesError, InvalidShareError, ParameterError

FIELD_PRIME = (1 << 256) + 297
"""The field modulus: the smallest prime above 2^256."""
SECRET_BYTES = 32
"""Length of a secret: a 32-byte seed or X25519 private key."""
SHARE_BYTES = 33
"""Length of an encoded share value (a field element below 2^257)."""
MAX_HOLDER = (1 << 31) - 1
"""Largest holder index (x-coordinate) accepted; indices are participant numbers."""


@dataclass(frozen=True, slots=True)
class Share:
    """One holder's share: the point (x, y) of the sharing polynomial.

    Attributes:
        x: the holder's index (nonzero).
        y: the polynomial's value at x (secret material; hidden from ``repr``).
    """

    x: int
    y: int = field(repr=False)

    def value_bytes(self) -> bytes:
        """Return ``y`` as 33 big-endian bytes (``x`` travels as the holder's index)."""
        return self.y.to_bytes(SHARE_BYTES, "big")

    @classmethod
    def from_value_bytes(cls, x: int, data: bytes) -> Share:
        """Decode a share value of holder ``x``.

        Raises:
            InvalidShareError: if ``data`` is not 33 bytes, or its value or ``x`` is not a valid
                field element for a share.
        """
        if not isinstance(data, bytes) or len(data) != SHARE_BYTES:
            raise InvalidShareError(f"a share value must be {SHARE_BYTES} bytes")
        y = int.from_bytes(data, "big")
        if y >= FIELD_PRIME:
            raise InvalidShareError("a share value is not below the field prime")
        _check_holder(x)
        return cls(x, y)


def split(secret: bytes, *, threshold: int, num_shares: int) -> tuple[Share, ...]:
    """Split ``secret`` into ``num_shares`` shares for holders 1..num_shares.

    Args:
        secret: 32 bytes.
        threshold: how many shares reconstruct the secret (2 <= threshold <= num_shares).
        num_shares: how many shares to make.

    Returns:
        The shares, holder x = 1, 2, ..., num_shares.
    """
    if isinstance(num_shares, bool) or not isinstance(num_shares, int) or num_shares < 1:
        raise ParameterError(f"num_shares must be an int >= 1, got {num_shares!r}")
    return split_among(secret, threshold=threshold, holders=range(1, num_shares + 1))


def split_among(secret: bytes, *, threshold: int, holders: Sequence[int]) -> tuple[Share, ...]:
    """Split ``secret`` into one share per holder index.

    Steps:
        1. s = int(secret); draw a_1..a_{t-1} uniformly from GF(p) with ``secrets.randbelow``;
        2. for each holder x, evaluate f(x) = s + a_1 x + ... + a_{t-1} x^{t-1} mod p (Horner).

    Args:
        secret: 32 bytes.
        threshold: t, with 1 <= t <= number of holders.
        holders: distinct indices in [1, 2^31 - 1].

    Returns:
        The shares in the order of ``holders``.

    Raises:
        ParameterError: for a secret of the wrong length, a threshold out of range or duplicate or
            out-of-range holders.
    """
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise ParameterError(f"secret must be {SECRET_BYTES} bytes")
    holders = list(holders)
    if len(set(holders)) != len(holders):
        raise ParameterError("holders must be distinct")
    for x in holders:
        try:
            _check_holder(x)
        except InvalidShareError as exc:
            raise ParameterError(str(exc)) from None
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise ParameterError(f"threshold must be an int, got {threshold!r}")
    if not 1 <= threshold <= len(holders):
        raise ParameterError(f"threshold must be in [1, {len(holders)}] (holders), got {threshold}")
    p = FIELD_PRIME
    # Highest degree first, for Horner's rule; the constant term is the secret.
    coefficients = [secrets.randbelow(p) for _ in range(threshold - 1)]
    coefficients.append(int.from_bytes(secret, "big"))
    shares = []
    for x in holders:
        y = 0
        for c in coefficients:
            y = (y * x + c) % p
        shares.append(Share(x, y))
    return tuple(shares)


def lagrange_at_zero(xs: Sequence[int]) -> tuple[int, ...]:
    """Return the Lagrange coefficients l_i with f(0) = sum_i l_i f(x_i) for deg f < len(xs).

    l_i = prod_{j != i} x_j / (x_j - x_i) mod p, with one modular inverse per coefficient.

    Raises:
        InvalidShareError: for duplicate or out-of-range x values.
    """
    if len(set(xs)) != len(xs):
        raise InvalidShareError("shares must come from distinct holders")
    for x in xs:
        _check_holder(x)
    p = FIELD_PRIME
    coefficients = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                numerator = numerator * xj % p
                denominator = denominator * (xj - xi) % p
        coefficients.append(numerator * pow(denominator, -1, p) % p)
    return tuple(coefficients)


def combine_with(coefficients: Sequence[int], ys: Sequence[int]) -> bytes:
    """Return the secret sum_i l_i y_i mod p for precomputed Lagrange coefficients.

    Raises:
        InvalidShareError: if the lengths differ or the result is not a 32-byte secret (which
            means the shares were not made by :func:`split` with this many holders).
    """
    if len(coefficients) != len(ys):
        raise InvalidShareError("as many share values as coefficients are needed")
    p = FIELD_PRIME
    value = sum(c * y for c, y in zip(coefficients, ys, strict=True)) % p
    if value >> (8 * SECRET_BYTES):
        raise InvalidShareError("the shares do not reconstruct a 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "big")


def combine(shares: Sequence[Share], *, threshold: int) -> bytes:
    """Reconstruct a secret from at least ``threshold`` shares.

    Uses the ``threshold`` shares with the smallest holder indices.

    Raises:
        InsufficientSharesError: if fewer than ``threshold`` shares are given.
        InvalidShareError: for duplicate holders or values outside the field.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ParameterError(f"threshold must be an int >= 1, got {threshold!r}")
    if len(shares) < threshold:
        raise InsufficientSharesError(f"{len(shares)} shares given, {threshold} needed")
    if len({s.x for s in shares}) != len(shares):
        raise InvalidShareError("shares must come from distinct holders")
    chosen = sorted(shares, key=lambda s: s.x)[:threshold]
    for share in chosen:
        if not 0 <= share.y < FIELD_PRIME:
            raise InvalidShareError("a share value is outside the field")
    coefficients = lagrange_at_zero([s.x for s in chosen])
    return combine_with(coefficients, [s.y for s in chosen])


def _check_holder(x: int) -> None:
    if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= MAX_HOLDER:
        raise InvalidShareError(f"a holder index must be an int in [1, {MAX_HOLDER}], got {x!r}")
