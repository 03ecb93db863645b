"""The coordinator's validation of single client responses; each failure names what is wrong.

Every decoder of untrusted input checks type, size and range before use (STYLE.md; DESIGN.md wire
rules): public keys and signatures have their exact lengths and the signature verifies under the
client's enrolled identity; envelopes go exactly to the client's holders and have the exact
sealed length; masked vectors have the ring's dtype and the round's length; unmask responses hold
shares exactly for the owners requested, each a field element.
"""

from __future__ import annotations

from collections.abc import Mapping

from mpc.errors import InvalidMessage, InvalidShareError, ParameterError
from mpc.keys import PUBLIC_KEY_BYTES, advertisement_payload, verify
from mpc.ring import check_ring_vector
from mpc.secagg.messages import (
    ENVELOPE_BYTES,
    AdvertiseKeysResponse,
    MaskedInputResponse,
    ShareKeysResponse,
    UnmaskResponse,
)
from mpc.shamir import Share


def check_advertisement(
    index: int, response: AdvertiseKeysResponse, *, context: bytes, identity: bytes
) -> None:
    """Check key lengths, distinct keys, and the Ed25519 signature over keys and session."""
    keys = (response.encryption_key, response.masking_key)
    if any(not isinstance(k, bytes) or len(k) != PUBLIC_KEY_BYTES for k in keys):
        raise InvalidMessage(f"client {index}'s public keys must be {PUBLIC_KEY_BYTES} bytes")
    if keys[0] == keys[1]:
        raise InvalidMessage(f"client {index} advertised the same key twice")
    payload = advertisement_payload(
        context=context, index=index, encryption_key=keys[0], masking_key=keys[1]
    )
    signature = response.signature
    if not isinstance(signature, bytes) or not verify(identity, signature, payload):
        raise InvalidMessage(f"client {index}'s key advertisement signature does not verify")


def check_envelopes(index: int, response: ShareKeysResponse, *, recipients: frozenset[int]) -> None:
    """Check that the envelopes go exactly to the client's holders and have the sealed length."""
    listed = int_keys(response.envelopes, f"envelopes of client {index}")
    if listed != recipients:
        odd = min(listed ^ recipients)
        raise InvalidMessage(f"client {index}'s envelopes do not match its holders ({odd})")
    for envelope in response.envelopes.values():
        if not isinstance(envelope, bytes) or len(envelope) != ENVELOPE_BYTES:
            raise InvalidMessage(f"an envelope of client {index} is not {ENVELOPE_BYTES} bytes")


def check_masked(index: int, response: MaskedInputResponse, *, ring_bits: int, length: int) -> None:
    """Check the masked vector's dtype, shape and length."""
    try:
        check_ring_vector(
            response.masked,
            ring_bits=ring_bits,
            length=length,
            name=f"masked vector of client {index}",
        )
    except ParameterError as exc:
        raise InvalidMessage(str(exc)) from None


def check_unmask_shares(
    index: int, response: UnmaskResponse, *, seeds: frozenset[int], keys: frozenset[int]
) -> None:
    """Check that shares come exactly for the requested owners and are field elements."""
    if int_keys(response.self_mask_shares, "self_mask_shares") != seeds:
        raise InvalidMessage(f"client {index} sent self-mask shares for other owners")
    if int_keys(response.key_shares, "key_shares") != keys:
        raise InvalidMessage(f"client {index} sent key shares for other owners")
    for owner, value in {**response.self_mask_shares, **response.key_shares}.items():
        try:
            Share.from_value_bytes(index, value)
        except InvalidShareError as exc:
            raise InvalidMessage(f"client {index}'s share of {owner}: {exc}") from None


def int_keys(mapping: object, name: str) -> frozenset[int]:
    """Return the keys of ``mapping`` if it maps ints, else raise ``InvalidMessage``."""
    if not isinstance(mapping, Mapping) or not all(
        isinstance(k, int) and not isinstance(k, bool) for k in mapping
    ):
        raise InvalidMessage(f"{name} must map int indices to bytes")
    return frozenset(mapping)
