"""Key agreement, key derivation, share envelopes and signed key advertisements.

Everything here composes primitives of ``cryptography``; nothing is home-made:

- X25519 key agreement (RFC 7748) for the two per-round key pairs of a client: c (envelopes for
  shares in transit) and s (pairwise masks), as in Bonawitz et al. CCS 2017, section 4, round 0;
- HKDF-SHA256 (RFC 5869) turns every 32-byte agreed secret or seed into a key for exactly one
  purpose. The salt is the session id; the ``info`` is a purpose label followed by the encoded
  session context (job, round, attempt, model hash, parameters) and the parties. This is the
  single home of the labels that keep derived keys apart (STYLE.md rule 5);
- AES-256-GCM envelopes for Shamir shares routed through the coordinator (round 1 of the paper);
- Ed25519 signatures by each client's long-term identity key over its key advertisement, which
  peers verify (the PKI assumption of the paper's active-adversary variant, section 6), and over
  the cohort of masked inputs in the consistency check (section 4, round 3);
- SHA-256 commitments to every Shamir share a client deals and to its self-mask seed, which the
  coordinator checks at reconstruction so that an altered share is named, not summed.

Threat model: the coordinator routes every message and may read or alter what it routes. Envelopes
are authenticated and bound to the session, sender and recipient, so a coordinator cannot read a
share or move it to another recipient or round; signatures stop it from substituting its own keys
for a client's (which would let it unmask that client's pairwise masks).

Notes:
    The session id follows Google fcp's ``compute_session_id`` (SHA-256 over all advertised public
    keys) and additionally binds the hash of the round's global model and the round parameters,
    so clients that received different models derive masks that do not cancel (the model
    inconsistency attack of Pasquini et al., CCS 2022; REFERENCES.md 2.4).
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Mapping
from enum import StrEnum

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mpc.errors import ParameterError

PUBLIC_KEY_BYTES = 32
"""Raw X25519 and Ed25519 public keys are 32 bytes."""
SIGNATURE_BYTES = 64
"""Raw Ed25519 signatures are 64 bytes."""
DERIVED_KEY_BYTES = 32
"""Every HKDF output is a full 32-byte key (AES-256)."""
NONCE_BYTES = 12
"""AES-GCM nonce length."""
TAG_BYTES = 16
"""AES-GCM authentication tag length."""
SESSION_ID_BYTES = 32
"""A session id is a SHA-256 digest."""

_ADVERTISEMENT_LABEL = b"bulwark/secagg/v1/advertise-keys"
_SESSION_LABEL = b"bulwark/secagg/v1/session-id"
_CONSISTENCY_LABEL = b"bulwark/secagg/v1/consistency-check"
_SHARE_COMMITMENT_LABEL = b"bulwark/secagg/v1/share-commitment"
_SEED_COMMITMENT_LABEL = b"bulwark/secagg/v1/seed-commitment"
_SHARE_KINDS = {"seed": b"s", "key": b"k"}
COMMITMENT_BYTES = 32
"""A share or seed commitment is a SHA-256 digest."""


class Purpose(StrEnum):
    """Labels that separate the keys derived by HKDF, one per use."""

    SHARE_ENCRYPTION = "bulwark/secagg/v1/share-encryption"
    """AES-GCM key for the envelope of the shares one client sends another (directional)."""
    PAIRWISE_MASK = "bulwark/secagg/v1/pairwise-mask"
    """AES-CTR key of the mask two neighbours add with opposite signs (symmetric)."""
    SELF_MASK = "bulwark/secagg/v1/self-mask"
    """AES-CTR key of a client's own mask, from its seed b_u."""
    HE_PAIRWISE_MASK = "bulwark/he/v1/pairwise-mask"
    """AES-CTR key of the zero-sum mask two HE owners add in BFV's plaintext ring (symmetric)."""


def encode_fields(*fields: str | int | bytes) -> bytes:
    """Encode fields unambiguously: a type tag, a 4-byte length, then the field's bytes.

    Ints are encoded as 8-byte big-endian unsigned values; strings as UTF-8.

    Raises:
        ParameterError: for a negative or too large int, or an unsupported type.
    """
    parts: list[bytes] = []
    for field in fields:
        if isinstance(field, bool):
            raise ParameterError("booleans are not encodable fields")
        if isinstance(field, int):
            if not 0 <= field < 1 << 64:
                raise ParameterError(f"int field {field} is outside [0, 2^64)")
            tag, data = b"i", field.to_bytes(8, "big")
        elif isinstance(field, str):
            tag, data = b"s", field.encode("utf-8")
        elif isinstance(field, bytes):
            tag, data = b"b", field
        else:
            raise ParameterError(f"unsupported field type {type(field).__name__}")
        parts.append(tag + struct.pack(">I", len(data)) + data)
    return b"".join(parts)


def generate_x25519() -> tuple[X25519PrivateKey, bytes]:
    """Return a fresh X25519 private key (from the OS CSPRNG) and its raw public key."""
    private = X25519PrivateKey.generate()
    return private, public_bytes(private)


def public_bytes(private: X25519PrivateKey) -> bytes:
    """Return the raw 32-byte public key of an X25519 private key."""
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_x25519_public(raw: bytes) -> X25519PublicKey:
    """Load a raw 32-byte X25519 public key.

    Raises:
        ParameterError: if ``raw`` is not 32 bytes.
    """
    if not isinstance(raw, bytes) or len(raw) != PUBLIC_KEY_BYTES:
        raise ParameterError(f"an X25519 public key must be {PUBLIC_KEY_BYTES} bytes")
    return X25519PublicKey.from_public_bytes(raw)


def agree(private: X25519PrivateKey, peer: X25519PublicKey) -> bytes:
    """Return the 32-byte X25519 shared secret.

    Raises:
        ParameterError: if the peer key is a low-order point (the shared secret would be zero).
    """
    try:
        return private.exchange(peer)
    except ValueError as exc:
        raise ParameterError("X25519 key agreement failed: invalid peer public key") from exc


def derive_key(
    secret: bytes,
    *,
    purpose: Purpose,
    session_id: bytes,
    context: bytes,
    parties: tuple[int, ...],
) -> bytes:
    """Derive a 32-byte key for one purpose with HKDF-SHA256.

    Args:
        secret: the full 32-byte X25519 shared secret or seed.
        purpose: what the key is for.
        session_id: the round's session id (HKDF salt).
        context: the encoded session context (job, round, attempt, model hash, parameters).
        parties: the indices the key belongs to: (sender, recipient) for an envelope, the sorted
            pair for a pairwise mask, (owner,) for a self mask.

    Returns:
        A 32-byte key.
    """
    if not isinstance(secret, bytes) or len(secret) != 32:
        raise ParameterError("the HKDF input secret must be 32 bytes")
    if len(session_id) != SESSION_ID_BYTES:
        raise ParameterError(f"session_id must be {SESSION_ID_BYTES} bytes")
    info = encode_fields(purpose.value, context, *parties)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=DERIVED_KEY_BYTES, salt=session_id, info=info)
    return hkdf.derive(secret)


def compute_session_id(*, context: bytes, public_keys: Mapping[int, tuple[bytes, bytes]]) -> bytes:
    """Return SHA-256 over the session context and every advertised pair of public keys.

    Args:
        context: the encoded session context (it contains the model hash).
        public_keys: index -> (encryption public key, masking public key) of every client that
            advertised keys; hashed in increasing index order.

    Returns:
        The 32-byte session id.
    """
    digest = hashlib.sha256(_SESSION_LABEL)
    digest.update(encode_fields(context, len(public_keys)))
    for index in sorted(public_keys):
        encryption_key, masking_key = public_keys[index]
        digest.update(encode_fields(index, encryption_key, masking_key))
    return digest.digest()


def advertisement_payload(
    *, context: bytes, index: int, encryption_key: bytes, masking_key: bytes
) -> bytes:
    """Return the bytes a client signs to advertise its two public keys for one session."""
    return encode_fields(_ADVERTISEMENT_LABEL, context, index, encryption_key, masking_key)


def consistency_payload(
    *, session_id: bytes, context: bytes, index: int, cohort: tuple[int, ...]
) -> bytes:
    """Return the bytes a client signs to state which masked inputs the coordinator holds.

    Bonawitz et al. CCS 2017, section 4, round 3 (ConsistencyCheck): the signature binds the
    session (id and context, so it cannot be replayed into another round or cohort), the signer,
    and the cohort U3 in increasing order, the last through its SHA-256 digest (computed once per
    cohort, so verifying q signatures does not encode the cohort q times).
    """
    return encode_fields(_CONSISTENCY_LABEL, session_id, context, index, _cohort_digest(cohort))


@functools.lru_cache(maxsize=16)
def _cohort_digest(cohort: tuple[int, ...]) -> bytes:
    return hashlib.sha256(encode_fields(len(cohort), *cohort)).digest()


def share_commitment(
    *, session_id: bytes, owner: int, holder: int, kind: str, value: bytes
) -> bytes:
    """Return SHA-256 over one Shamir share a dealer sent, bound to session, dealer and holder.

    The dealer sends the coordinator one commitment per share it deals; at unmasking the
    coordinator checks every revealed share against it, so an altered share names its holder
    instead of silently corrupting the sum. A share value has about 256 bits of entropy (the
    dealer's random polynomial), so its hash reveals nothing about it or the secret.

    Args:
        session_id: the round's session id.
        owner: the dealer whose secret was shared.
        holder: the holder (x-coordinate) of the share.
        kind: ``"seed"`` (self-mask seed b_u) or ``"key"`` (masking key s_u^SK).
        value: the 33-byte share value.

    Raises:
        ParameterError: for a session id that is not 32 bytes, an index outside [0, 2^32) or
            another kind.

    Notes:
        Every field has a fixed length (32-byte session id, 4-byte indices, one kind byte), so
        plain concatenation is unambiguous; it avoids :func:`encode_fields` because the
        coordinator hashes one commitment per revealed share (about n k per round).
    """
    if len(session_id) != SESSION_ID_BYTES:
        raise ParameterError(f"a session id must be {SESSION_ID_BYTES} bytes")
    if kind not in _SHARE_KINDS:
        raise ParameterError(f"kind must be one of {sorted(_SHARE_KINDS)}, got {kind!r}")
    try:
        indices = struct.pack(">II", owner, holder)
    except struct.error:
        raise ParameterError("owner and holder must be ints in [0, 2^32)") from None
    return hashlib.sha256(
        _SHARE_COMMITMENT_LABEL + session_id + indices + _SHARE_KINDS[kind] + value
    ).digest()


def seed_commitment(*, session_id: bytes, owner: int, seed: bytes) -> bytes:
    """Return SHA-256 over a client's self-mask seed, bound to the session and the client.

    The coordinator checks the seed it rebuilds against it: a dealer whose shares do not lie on
    one polynomial is then named instead of giving a wrong sum (the masking key has its own check,
    its advertised public key). The seed is 32 bytes from the OS CSPRNG, so the digest hides it.
    """
    return hashlib.sha256(encode_fields(_SEED_COMMITMENT_LABEL, session_id, owner, seed)).digest()


def sign(identity_key: Ed25519PrivateKey, payload: bytes) -> bytes:
    """Sign ``payload`` with a long-term Ed25519 identity key (64-byte signature)."""
    return identity_key.sign(payload)


def identity_public_bytes(identity_key: Ed25519PrivateKey) -> bytes:
    """Return the raw 32-byte Ed25519 public key of an identity key."""
    return identity_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def verify(identity_public: bytes, signature: bytes, payload: bytes) -> bool:
    """Return whether ``signature`` is a valid Ed25519 signature of ``payload``."""
    if len(identity_public) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(identity_public).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def seal(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt with AES-256-GCM under a fresh random nonce; return nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, envelope: bytes, *, aad: bytes) -> bytes | None:
    """Decrypt an envelope from :func:`seal`; return None if it does not authenticate."""
    if len(envelope) < NONCE_BYTES + TAG_BYTES:
        return None
    try:
        return AESGCM(key).decrypt(envelope[:NONCE_BYTES], envelope[NONCE_BYTES:], aad)
    except InvalidTag:
        return None


def sealed_length(plaintext_length: int) -> int:
    """Return the length of an envelope of ``plaintext_length`` bytes."""
    return NONCE_BYTES + plaintext_length + TAG_BYTES
