"""The coordinator's validation of single client responses; each failure names what is wrong.

Every decoder of untrusted input checks type, size and range before use (STYLE.md; DESIGN.md wire
rules): public keys and signatures have their exact lengths and the signature verifies under the
client's enrolled identity; envelopes go exactly to the client's holders and have the exact
sealed length, with one 32-byte commitment per dealt share; masked vectors have the ring's dtype
and the round's length; consistency signatures verify over the session and the cohort; unmask
responses hold shares exactly for the owners requested, each a field element that matches the
commitment its dealer sent for this holder (so an altered share names its holder).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mpc.errors import InvalidMessage, InvalidShareError, ParameterError
from mpc.keys import (
    COMMITMENT_BYTES,
    PUBLIC_KEY_BYTES,
    advertisement_payload,
    consistency_payload,
    share_commitment,
    verify,
)
from mpc.ring import check_ring_vector
from mpc.secagg.messages import (
    ENVELOPE_BYTES,
    AdvertiseKeysResponse,
    ConsistencyCheckResponse,
    MaskedInputResponse,
    ShareKeysResponse,
    UnmaskResponse,
)
from mpc.shamir import Share


@dataclass(frozen=True, slots=True)
class Commitments:
    """What one dealer committed to: holder -> digest of its seed share and of its key share."""

    seeds: Mapping[int, bytes] = field(repr=False)
    keys: Mapping[int, bytes] = field(repr=False)
    seed: bytes = field(repr=False)


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


def check_share_commitments(
    index: int, response: ShareKeysResponse, *, holders: frozenset[int]
) -> None:
    """Check one 32-byte commitment per holder for each kind of share, and the seed's."""
    for name in ("seed_commitments", "key_commitments"):
        mapping = getattr(response, name)
        listed = int_keys(mapping, f"{name} of client {index}")
        if listed != holders:
            odd = min(listed ^ holders)
            raise InvalidMessage(f"client {index}'s {name} do not match its holders ({odd})")
        for digest in mapping.values():
            if not isinstance(digest, bytes) or len(digest) != COMMITMENT_BYTES:
                raise InvalidMessage(
                    f"a commitment of client {index} is not {COMMITMENT_BYTES} bytes"
                )
    seed = response.seed_commitment
    if not isinstance(seed, bytes) or len(seed) != COMMITMENT_BYTES:
        raise InvalidMessage(f"client {index}'s seed commitment is not {COMMITMENT_BYTES} bytes")


def check_consistency(
    index: int,
    response: ConsistencyCheckResponse,
    *,
    session_id: bytes,
    context: bytes,
    cohort: tuple[int, ...],
    identity: bytes,
) -> None:
    """Check the client's Ed25519 signature over the session and the cohort it was sent."""
    payload = consistency_payload(
        session_id=session_id, context=context, index=index, cohort=cohort
    )
    signature = response.signature
    if not isinstance(signature, bytes) or not verify(identity, signature, payload):
        raise InvalidMessage(f"client {index}'s consistency-check signature does not verify")


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
    index: int,
    response: UnmaskResponse,
    *,
    seeds: frozenset[int],
    keys: frozenset[int],
    session_id: bytes,
    commitments: Mapping[int, Commitments],
) -> None:
    """Check that shares come exactly for the requested owners and match their commitments.

    Each share must be a field element equal to what its dealer committed to for this holder.
    """
    if int_keys(response.self_mask_shares, "self_mask_shares") != seeds:
        raise InvalidMessage(f"client {index} sent self-mask shares for other owners")
    if int_keys(response.key_shares, "key_shares") != keys:
        raise InvalidMessage(f"client {index} sent key shares for other owners")
    for kind, shares in (("seed", response.self_mask_shares), ("key", response.key_shares)):
        for owner, value in shares.items():
            try:
                Share.from_value_bytes(index, value)
            except InvalidShareError as exc:
                raise InvalidMessage(f"client {index}'s share of {owner}: {exc}") from None
            dealt = commitments[owner].seeds if kind == "seed" else commitments[owner].keys
            digest = share_commitment(
                session_id=session_id, owner=owner, holder=index, kind=kind, value=value
            )
            if dealt.get(index) != digest:
                what = "self-mask seed" if kind == "seed" else "masking key"
                raise InvalidMessage(
                    f"client {index}'s share of client {owner}'s {what} does not match the "
                    f"commitment client {owner} made for it: the share was altered"
                )


def int_keys(mapping: object, name: str) -> frozenset[int]:
    """Return the keys of ``mapping`` if it maps ints, else raise ``InvalidMessage``."""
    if not isinstance(mapping, Mapping) or not all(
        isinstance(k, int) and not isinstance(k, bool) for k in mapping
    ):
        raise InvalidMessage(f"{name} must map int indices to bytes")
    return frozenset(mapping)
