from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tenseal as ts

import he
from he import _wire, encoding
from he.context import SecretContext
from he.params import Scheme


def test_public_context_has_no_secret_key(public: he.PublicContext) -> None:
    for scheme in (Scheme.CKKS, Scheme.BFV):
        ctx = public.tenseal(scheme)
        assert not ctx.has_secret_key()
        assert not ctx.is_private()
        assert ctx.has_public_key()


def test_public_context_cannot_decrypt(public: he.PublicContext) -> None:
    # Prepare: an encryption under the public key (what an owner sends)
    ctx = public.tenseal(Scheme.CKKS)
    blobs = encoding.encrypt(ctx, he.CKKS_8192, np.array([1.0, 2.0, 3.0]))
    vectors = encoding.load_ciphertexts(ctx, he.CKKS_8192, blobs, length=3, what="test")

    # Execute / Assert: no decrypt method, TenSEAL refuses, and our decrypt refuses
    assert not hasattr(public, "decrypt")
    with pytest.raises(ValueError, match="doesn't hold a secret_key"):
        vectors[0].decrypt()
    with pytest.raises(he.MissingSecretKey):
        encoding.decrypt(ctx, he.CKKS_8192, vectors)


def test_serialized_public_context_has_no_secret_key(keyholder: he.KeyHolder) -> None:
    # Prepare
    data = keyholder.public_context().to_bytes()
    env = _wire.decode(
        data, max_bytes=len(data), max_blobs=2, max_blob_bytes=len(data), what="test"
    )

    # Execute: load each TenSEAL blob directly, bypassing our checks
    loaded = [ts.context_from(blob) for blob in env.blobs]

    # Assert
    assert all(not ctx.has_secret_key() for ctx in loaded)


def test_fingerprint_is_sha256_of_the_bytes(public: he.PublicContext) -> None:
    assert public.fingerprint == hashlib.sha256(public.to_bytes()).hexdigest()


def test_round_trip_keeps_fingerprint(public: he.PublicContext) -> None:
    again = he.PublicContext.from_bytes(public.to_bytes())
    assert again.fingerprint == public.fingerprint
    assert again.params == public.params


def test_a_context_with_secret_key_is_refused() -> None:
    # Prepare: what a careless key holder might publish
    secret = SecretContext([he.BFV_4096])
    blob = secret.tenseal(Scheme.BFV).serialize(save_secret_key=True)
    data = _wire.encode(_wire.Kind.PUBLIC_CONTEXT, {"params": [he.BFV_4096.to_dict()]}, [blob])

    # Execute / Assert
    with pytest.raises(he.DecodeError, match="carries a secret key"):
        he.PublicContext.from_bytes(data)


def test_declared_parameters_must_match_the_context() -> None:
    # Prepare: a BFV_8192 context declared as BFV_4096
    secret = SecretContext([he.BFV_8192])
    blob = secret.tenseal(Scheme.BFV).serialize(save_secret_key=False)
    data = _wire.encode(_wire.Kind.PUBLIC_CONTEXT, {"params": [he.BFV_4096.to_dict()]}, [blob])

    # Execute / Assert
    with pytest.raises(he.ContextMismatch, match="poly_modulus_degree 8192, declared 4096"):
        he.PublicContext.from_bytes(data)


def test_insecure_declared_parameters_are_refused() -> None:
    # Prepare
    bad = {**he.CKKS_8192.to_dict(), "coeff_mod_bit_sizes": [60, 60, 60, 60]}
    data = _wire.encode(_wire.Kind.PUBLIC_CONTEXT, {"params": [bad]}, [b"x"])

    # Execute / Assert
    with pytest.raises(he.InsecureParameters, match="limit for poly_modulus_degree 8192 is 218"):
        he.PublicContext.from_bytes(data)


@pytest.mark.parametrize("cut", [0, 5, 100, -1])
def test_truncated_bytes_are_refused(public: he.PublicContext, cut: int) -> None:
    data = public.to_bytes()
    with pytest.raises(he.DecodeError):
        he.PublicContext.from_bytes(data[:cut])


def test_size_limit_is_checked_first(public: he.PublicContext) -> None:
    with pytest.raises(he.DecodeError, match="exceeds the limit of 1000"):
        he.PublicContext.from_bytes(public.to_bytes(), max_bytes=1000)


def test_repr_shows_no_key_material(public: he.PublicContext, keyholder: he.KeyHolder) -> None:
    assert "secret" not in repr(public).lower()
    assert "<secret key>" in repr(keyholder)
    assert "<secret>" in repr(SecretContext([he.BFV_4096]))


def test_one_params_per_scheme() -> None:
    with pytest.raises(he.ParameterError, match="at most one HEParams per scheme"):
        SecretContext([he.BFV_4096, he.BFV_8192])
