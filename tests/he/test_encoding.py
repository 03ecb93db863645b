from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import he
from he import encoding
from he.context import SecretContext
from he.params import Scheme


@given(length=st.integers(0, 50_000), slots=st.sampled_from([1, 7, 4096, 8192]))
def test_chunk_lengths_cover_the_vector(length: int, slots: int) -> None:
    chunks = encoding.chunk_lengths(length, slot_count=slots)
    assert sum(chunks) == length
    assert all(0 < c <= slots for c in chunks)
    assert all(c == slots for c in chunks[:-1])


@pytest.fixture(scope="module")
def secret() -> SecretContext:
    return SecretContext([he.CKKS_8192, he.BFV_4096])


def test_bfv_packing_across_ciphertexts_is_exact(secret: SecretContext) -> None:
    # Prepare: more values than one ciphertext's 4096 slots, at the no-wrap limit
    ctx = secret.tenseal(Scheme.BFV)
    limit = he.BFV_4096.max_abs_integer
    values = np.arange(-5000, 5000, dtype=np.int64)
    values[0], values[-1] = -limit, limit

    # Execute
    blobs = encoding.encrypt(ctx, he.BFV_4096, values)
    vectors = encoding.load_ciphertexts(ctx, he.BFV_4096, blobs, length=10_000, what="t")
    out = encoding.decrypt(ctx, he.BFV_4096, vectors)

    # Assert
    assert len(blobs) == 3
    np.testing.assert_array_equal(out, values)


def test_ckks_packing_across_ciphertexts(secret: SecretContext) -> None:
    # Prepare
    ctx = secret.tenseal(Scheme.CKKS)
    values = np.linspace(-1000.0, 1000.0, 9000)

    # Execute
    blobs = encoding.encrypt(ctx, he.CKKS_8192, values)
    vectors = encoding.load_ciphertexts(ctx, he.CKKS_8192, blobs, length=9000, what="t")
    out = encoding.decrypt(ctx, he.CKKS_8192, vectors)

    # Assert
    assert len(blobs) == 3
    np.testing.assert_allclose(out, values, rtol=0, atol=1e-9)


def test_wrong_ciphertext_count_is_refused(secret: SecretContext) -> None:
    ctx = secret.tenseal(Scheme.CKKS)
    blobs = encoding.encrypt(ctx, he.CKKS_8192, np.zeros(10))
    with pytest.raises(he.DecodeError, match="expected 2 ckks ciphertext"):
        encoding.load_ciphertexts(ctx, he.CKKS_8192, blobs, length=5000, what="t")


def test_wrong_value_count_is_refused(secret: SecretContext) -> None:
    ctx = secret.tenseal(Scheme.CKKS)
    blobs = encoding.encrypt(ctx, he.CKKS_8192, np.zeros(10))
    with pytest.raises(he.DecodeError, match="holds 10 values; expected 11"):
        encoding.load_ciphertexts(ctx, he.CKKS_8192, blobs, length=11, what="t")


def test_foreign_parameters_are_refused_before_arithmetic(secret: SecretContext) -> None:
    # Prepare: a BFV ciphertext under N=8192 offered to an N=4096 context
    other = SecretContext([he.BFV_8192])
    blobs = encoding.encrypt(other.tenseal(Scheme.BFV), he.BFV_8192, np.ones(4, dtype=np.int64))

    # Execute / Assert
    with pytest.raises(he.DecodeError, match="bfv ciphertext 0 has 3[0-9]* bytes; at most"):
        encoding.load_ciphertexts(
            secret.tenseal(Scheme.BFV), he.BFV_4096, blobs, length=4, what="t"
        )


def test_ciphertext_of_another_scale_is_refused(secret: SecretContext) -> None:
    # Prepare: same key and primes, but encoded at scale 2^40
    ctx = secret.tenseal(Scheme.CKKS)
    import tenseal as ts

    blob = ts.ckks_vector(ctx, [1.0, 2.0], scale=2.0**40).serialize()

    # Execute / Assert
    with pytest.raises(he.DecodeError, match="has scale"):
        encoding.load_ciphertexts(ctx, he.CKKS_8192, [blob], length=2, what="t")


def test_oversized_ciphertext_is_refused(secret: SecretContext) -> None:
    ctx = secret.tenseal(Scheme.CKKS)
    limit = encoding.max_ciphertext_bytes(he.CKKS_8192)
    with pytest.raises(he.DecodeError, match=f"at most {limit} allowed"):
        encoding.load_ciphertexts(ctx, he.CKKS_8192, [b"\0" * (limit + 1)], length=2, what="t")


@pytest.mark.parametrize("junk", [b"", b"\x00" * 64, b"not a ciphertext"])
def test_garbage_is_refused(secret: SecretContext, junk: bytes) -> None:
    with pytest.raises(he.DecodeError):
        encoding.load_ciphertexts(
            secret.tenseal(Scheme.CKKS), he.CKKS_8192, [junk], length=2, what="t"
        )


def test_params_replace_keeps_slot_rule() -> None:
    assert dataclasses.replace(he.BFV_4096).slot_count == 4096


def test_ciphertext_under_other_parameters_does_not_parse(secret: SecretContext) -> None:
    # Prepare: a CKKS ciphertext of degree 4096 (small enough to pass the size check)
    small = he.HEParams(
        scheme=Scheme.CKKS,
        poly_modulus_degree=4096,
        coeff_mod_bit_sizes=(40, 29, 40),
        scale_bits=40,
    )
    other = SecretContext([small])
    blobs = encoding.encrypt(other.tenseal(Scheme.CKKS), small, np.ones(4))

    # Execute / Assert
    with pytest.raises(he.DecodeError, match="does not parse under this context"):
        encoding.load_ciphertexts(
            secret.tenseal(Scheme.CKKS), he.CKKS_8192, blobs, length=4, what="t"
        )
