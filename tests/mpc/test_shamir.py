"""Tests for mpc.shamir: any t shares reconstruct, t - 1 do not, the field, malformed shares."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from strategies import secrets32, threshold_cohorts

from mpc import InsufficientSharesError, InvalidShareError, ParameterError, Share, combine, split
from mpc.shamir import FIELD_PRIME, combine_with, lagrange_at_zero, split_among

_MR_BASES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71]


def _probably_prime(n: int) -> bool:
    """Miller-Rabin with 64 bases (error below 4^-64): an oracle independent of the module."""
    if n < 2 or any(n % p == 0 for p in _MR_BASES if p < n):
        return n in _MR_BASES
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    bases = _MR_BASES + [random.Random(i).randrange(2, n - 1) for i in range(44)]
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def test_field_prime_is_the_smallest_prime_above_two_to_the_256() -> None:
    assert FIELD_PRIME == 2**256 + 297
    assert _probably_prime(FIELD_PRIME)
    assert not any(_probably_prime(2**256 + k) for k in range(1, 297, 2))


@given(secret=secrets32(), pair=threshold_cohorts(max_holders=12), data=st.data())
def test_any_t_shares_reconstruct_and_t_minus_1_do_not(
    secret: bytes, pair: tuple[int, int], data: st.DataObject
) -> None:
    # Prepare
    t, n = pair
    shares = split(secret, threshold=t, num_shares=n)
    chosen = data.draw(st.permutations(shares)).copy()[:t]

    # Execute
    rebuilt = combine(chosen, threshold=t)

    # Assert
    assert rebuilt == secret
    if t > 1:
        partial = chosen[: t - 1]
        coefficients = lagrange_at_zero([s.x for s in partial])
        guess = sum(c * s.y for c, s in zip(coefficients, partial, strict=True)) % FIELD_PRIME
        assert guess != int.from_bytes(secret, "big")
        with pytest.raises(InsufficientSharesError):
            combine(partial, threshold=t)


def test_combine_agrees_with_direct_polynomial_evaluation() -> None:
    # Prepare: an explicit polynomial, evaluated naively at the holders (oracle).
    rng = random.Random(5)
    coefficients = [rng.randrange(FIELD_PRIME) for _ in range(5)]
    coefficients[0] = int.from_bytes(bytes(range(32)), "big")
    holders = [3, 9, 10, 17, 40]
    shares = [
        Share(x, sum(c * x**k for k, c in enumerate(coefficients)) % FIELD_PRIME) for x in holders
    ]

    # Execute / Assert
    assert combine(shares, threshold=5) == bytes(range(32))
    assert combine_with(lagrange_at_zero(holders), [s.y for s in shares]) == bytes(range(32))


def test_t_minus_1_shares_are_uniform_whatever_the_secret() -> None:
    # Prepare: the share of holder 1 of a 2-out-of-3 sharing, over many sharings of two secrets.
    low_bytes: dict[bytes, list[int]] = {secret: [] for secret in (bytes(32), b"\xff" * 32)}
    for secret, values in low_bytes.items():
        for _ in range(4000):
            values.append(split(secret, threshold=2, num_shares=3)[0].y & 0xF)

    # Execute / Assert: 16 bins of the low nibble, chi-square against uniform for each secret.
    for values in low_bytes.values():
        assert stats.chisquare(np.bincount(values, minlength=16)).pvalue > 1e-4


def test_split_among_uses_holder_indices_as_x() -> None:
    shares = split_among(bytes(32), threshold=2, holders=[7, 3, 11])
    assert [s.x for s in shares] == [7, 3, 11]
    assert combine([shares[2], shares[0]], threshold=2) == bytes(32)


def test_share_values_round_trip_through_bytes_and_are_hidden_from_repr() -> None:
    share = split(b"\x01" * 32, threshold=2, num_shares=2)[1]
    assert Share.from_value_bytes(share.x, share.value_bytes()) == share
    assert str(share.y) not in repr(share)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secret": bytes(31), "threshold": 2, "holders": [1, 2]}, "32 bytes"),
        ({"secret": bytes(32), "threshold": 3, "holders": [1, 2]}, "threshold"),
        ({"secret": bytes(32), "threshold": 0, "holders": [1, 2]}, "threshold"),
        ({"secret": bytes(32), "threshold": 2, "holders": [1, 1]}, "distinct"),
        ({"secret": bytes(32), "threshold": 1, "holders": [0]}, "holder index"),
    ],
)
def test_split_rejects_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        split_among(**kwargs)  # type: ignore[arg-type]


def test_combine_rejects_malformed_shares() -> None:
    shares = list(split(bytes(32), threshold=2, num_shares=3))
    with pytest.raises(InvalidShareError, match="distinct"):
        combine([shares[0], shares[0]], threshold=2)
    with pytest.raises(InvalidShareError, match="outside the field"):
        combine([shares[0], Share(2, FIELD_PRIME)], threshold=2)
    with pytest.raises(InvalidShareError, match="33 bytes"):
        Share.from_value_bytes(1, bytes(32))
    with pytest.raises(InvalidShareError, match="below the field prime"):
        Share.from_value_bytes(1, FIELD_PRIME.to_bytes(33, "big"))
    with pytest.raises(InvalidShareError, match="holder index"):
        Share.from_value_bytes(0, bytes(33))
