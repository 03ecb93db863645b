"""Tests for mpc.keys: label separation, session binding, envelopes, signatures."""

from __future__ import annotations

import itertools

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from strategies import secrets32

from mpc import ParameterError
from mpc.keys import (
    Purpose,
    advertisement_payload,
    agree,
    compute_session_id,
    derive_key,
    encode_fields,
    generate_x25519,
    identity_public_bytes,
    load_x25519_public,
    open_sealed,
    seal,
    sealed_length,
    sign,
    verify,
)

FIELDS = st.one_of(st.text(max_size=6), st.integers(0, 2**64 - 1), st.binary(max_size=6))


@given(a=st.lists(FIELDS, max_size=4), b=st.lists(FIELDS, max_size=4))
def test_field_encoding_is_injective(a: list[object], b: list[object]) -> None:
    if [(type(x), x) for x in a] != [(type(y), y) for y in b]:
        assert encode_fields(*a) != encode_fields(*b)  # type: ignore[arg-type]


def test_field_encoding_refuses_what_it_cannot_encode() -> None:
    for bad in (-1, 2**64, True, 1.5):
        with pytest.raises(ParameterError):
            encode_fields(bad)  # type: ignore[arg-type]


@given(secret=secrets32())
def test_derived_keys_differ_by_purpose_session_context_and_parties(secret: bytes) -> None:
    # Prepare
    sessions, contexts = (bytes(32), b"\x01" * 32), (b"ctx-a", b"ctx-b")
    parties = ((1, 2), (2, 1), (1, 3), (1,))

    # Execute
    keys = {
        derive_key(secret, purpose=p, session_id=s, context=c, parties=q)
        for p, s, c, q in itertools.product(Purpose, sessions, contexts, parties)
    }

    # Assert
    assert len(keys) == len(Purpose) * 2 * 2 * 4
    assert all(len(k) == 32 for k in keys)


def test_derive_key_needs_full_length_inputs() -> None:
    with pytest.raises(ParameterError, match="32 bytes"):
        derive_key(
            bytes(16), purpose=Purpose.SELF_MASK, session_id=bytes(32), context=b"", parties=(1,)
        )
    with pytest.raises(ParameterError, match="session_id"):
        derive_key(
            bytes(32), purpose=Purpose.SELF_MASK, session_id=bytes(8), context=b"", parties=(1,)
        )


def test_x25519_agreement_is_symmetric_and_low_order_points_are_refused() -> None:
    a, a_pub = generate_x25519()
    b, b_pub = generate_x25519()
    assert agree(a, load_x25519_public(b_pub)) == agree(b, load_x25519_public(a_pub))
    with pytest.raises(ParameterError):
        agree(a, load_x25519_public(bytes(32)))  # the all-zero point has small order
    with pytest.raises(ParameterError, match="32 bytes"):
        load_x25519_public(bytes(31))


def test_session_id_binds_every_key_and_the_context_but_not_dict_order() -> None:
    # Prepare
    keys = {1: (b"a" * 32, b"b" * 32), 2: (b"c" * 32, b"d" * 32)}
    base = compute_session_id(context=b"model-1", public_keys=keys)

    # Execute / Assert
    assert compute_session_id(context=b"model-1", public_keys=dict(reversed(keys.items()))) == base
    assert compute_session_id(context=b"model-2", public_keys=keys) != base
    assert (
        compute_session_id(context=b"model-1", public_keys={**keys, 2: (b"c" * 32, b"e" * 32)})
        != base
    )
    assert compute_session_id(context=b"model-1", public_keys={1: keys[1]}) != base


def test_envelopes_authenticate_content_and_associated_data() -> None:
    # Prepare
    key = bytes(range(32))
    envelope = seal(key, b"shares", aad=b"session")

    # Execute / Assert
    assert len(envelope) == sealed_length(6)
    assert open_sealed(key, envelope, aad=b"session") == b"shares"
    assert open_sealed(key, envelope, aad=b"another session") is None
    assert open_sealed(bytes(32), envelope, aad=b"session") is None
    tampered = envelope[:-1] + bytes([envelope[-1] ^ 1])
    assert open_sealed(key, tampered, aad=b"session") is None
    assert open_sealed(key, b"short", aad=b"session") is None
    assert seal(key, b"shares", aad=b"session") != envelope  # fresh nonce each time


def test_advertisement_signatures_bind_index_keys_and_context() -> None:
    # Prepare
    identity = Ed25519PrivateKey.generate()
    public = identity_public_bytes(identity)
    payload = advertisement_payload(
        context=b"c", index=3, encryption_key=b"e" * 32, masking_key=b"m" * 32
    )
    signature = sign(identity, payload)

    # Execute / Assert
    assert verify(public, signature, payload)
    for other in (
        advertisement_payload(
            context=b"d", index=3, encryption_key=b"e" * 32, masking_key=b"m" * 32
        ),
        advertisement_payload(
            context=b"c", index=4, encryption_key=b"e" * 32, masking_key=b"m" * 32
        ),
        advertisement_payload(
            context=b"c", index=3, encryption_key=b"m" * 32, masking_key=b"e" * 32
        ),
    ):
        assert not verify(public, signature, other)
    assert not verify(identity_public_bytes(Ed25519PrivateKey.generate()), signature, payload)
    assert not verify(public, signature[:-1], payload)


def test_share_commitments_bind_session_dealer_holder_kind_and_value() -> None:
    from mpc.keys import share_commitment

    base = {"session_id": bytes(32), "owner": 3, "holder": 5, "kind": "seed", "value": bytes(33)}
    digest = share_commitment(**base)  # type: ignore[arg-type]
    changes = [
        {"session_id": b"\x01" * 32},
        {"owner": 4},
        {"holder": 6},
        {"kind": "key"},
        {"value": b"\x00" * 32 + b"\x01"},
    ]
    for change in changes:
        assert share_commitment(**{**base, **change}) != digest, change  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="session id"):
        share_commitment(**{**base, "session_id": bytes(31)})  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="kind"):
        share_commitment(**{**base, "kind": "other"})  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="2\\^32"):
        share_commitment(**{**base, "owner": -1})  # type: ignore[arg-type]


def test_consistency_payload_binds_session_signer_and_cohort() -> None:
    from mpc.keys import consistency_payload

    base = {"session_id": bytes(32), "context": bytes(32), "index": 1, "cohort": (1, 2, 3)}
    payload = consistency_payload(**base)  # type: ignore[arg-type]
    for change in [
        {"session_id": b"\x01" * 32},
        {"context": b"\x01" * 32},
        {"index": 2},
        {"cohort": (1, 2)},
        {"cohort": (1, 2, 4)},
    ]:
        assert consistency_payload(**{**base, **change}) != payload, change  # type: ignore[arg-type]
