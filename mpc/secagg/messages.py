"""The vocabulary both state machines share: stages, the session, and one message per direction.

The five stages follow Bonawitz et al. CCS 2017, section 4 (rounds 0 to 4, with the consistency
check of the active-adversary variant as round 3), which Bell et al. CCS 2020 keep for SecAgg+.
Messages are flat frozen dataclasses holding only ``int``, ``str``, ``bytes``, tuples of those,
``Mapping[int, bytes]`` and one numpy array, so that a transport can put them on the wire field by
field. Every request repeats the session (job, round, attempt, model hash) so that a client can
refuse a request from another session; the first request also carries the round parameters, the
participants and the client's neighbours.

Participants are identified by int indices 1..n (any distinct ints in [1, 2^31 - 1]); they double
as Shamir x-coordinates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc.errors import ParameterError
from mpc.keys import encode_fields, sealed_length
from mpc.shamir import SHARE_BYTES

MODEL_HASH_BYTES = 32
"""A model hash is a SHA-256 digest."""
MAX_JOB_ID_CHARS = 256
"""Longest accepted job id."""
ENVELOPE_PLAINTEXT_BYTES = 8 + 2 * SHARE_BYTES
"""Plaintext of a share envelope: sender (4 bytes), recipient (4 bytes), two share values."""
ENVELOPE_BYTES = sealed_length(ENVELOPE_PLAINTEXT_BYTES)
"""Length of a share envelope on the wire (nonce, ciphertext, tag)."""
_CONTEXT_LABEL = "bulwark/secagg/v1/session-context"


class Stage(StrEnum):
    """The protocol's stages, in order."""

    ADVERTISE_KEYS = "advertise_keys"
    """Round 0: each client generates and signs two X25519 public keys."""
    SHARE_KEYS = "share_keys"
    """Round 1: each client Shamir-shares its seed and masking key among its neighbours."""
    MASKED_INPUT = "masked_input"
    """Round 2: each client sends its input plus self and pairwise masks."""
    CONSISTENCY_CHECK = "consistency_check"
    """Round 3: each client signs the cohort whose masked inputs the coordinator says it holds."""
    UNMASK = "unmask"
    """Round 4: each client reveals self-mask shares of survivors and key shares of dropouts."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Identifies one attempt of one round of one job, and the model it aggregates over.

    Attributes:
        job_id: the job's identifier (1 to 256 characters).
        round: the round number (>= 0).
        attempt: the attempt number within the round (>= 0); a retried round gets a new one.
        model_hash: the 32-byte SHA-256 of the global model sent this round.

    Raises:
        ParameterError: for an empty job id, negative numbers or a hash of the wrong length.
    """

    job_id: str
    round: int
    attempt: int
    model_hash: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str) or not 1 <= len(self.job_id) <= MAX_JOB_ID_CHARS:
            raise ParameterError(f"job_id must be a str of 1 to {MAX_JOB_ID_CHARS} characters")
        for name in ("round", "attempt"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
                raise ParameterError(f"{name} must be an int in [0, 2^63), got {value!r}")
        if not isinstance(self.model_hash, bytes) or len(self.model_hash) != MODEL_HASH_BYTES:
            raise ParameterError(f"model_hash must be {MODEL_HASH_BYTES} bytes (SHA-256)")


def session_context(
    session: SessionInfo,
    *,
    num_clients: int,
    threshold: int,
    degree: int,
    ring_bits: int,
    vector_length: int,
    participants: tuple[int, ...],
    consistency_threshold: int,
) -> bytes:
    """Return the 32-byte digest of everything a round's keys must be bound to.

    It enters every HKDF ``info``, every signed key advertisement and the session id, so keys of
    different jobs, rounds, attempts, models, parameters or cohorts never coincide.
    """
    fields = encode_fields(
        _CONTEXT_LABEL,
        session.job_id,
        session.round,
        session.attempt,
        session.model_hash,
        num_clients,
        threshold,
        degree,
        ring_bits,
        vector_length,
        consistency_threshold,
        *sorted(participants),
    )
    return hashlib.sha256(fields).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Request:
    """Fields every request carries: the session it belongs to."""

    job_id: str
    round: int
    attempt: int
    model_hash: bytes

    @property
    def session(self) -> SessionInfo:
        """The session this request belongs to (validated)."""
        return SessionInfo(self.job_id, self.round, self.attempt, self.model_hash)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseKeysRequest(_Request):
    """Coordinator -> client, stage ADVERTISE_KEYS.

    Attributes:
        num_clients: n.
        threshold: t.
        degree: k (n - 1 for the complete graph).
        ring_bits: 32 or 64.
        vector_length: number of ring elements of the masked input.
        participants: every selected client (U0), increasing.
        neighbours: this client's neighbours, increasing.
        consistency_threshold: how many signatures on one cohort a client needs before it
            unmasks (``SecAggParams.consistency_threshold``).
    """

    num_clients: int
    threshold: int
    degree: int
    ring_bits: int
    vector_length: int
    participants: tuple[int, ...]
    neighbours: tuple[int, ...]
    consistency_threshold: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseKeysResponse:
    """Client -> coordinator, stage ADVERTISE_KEYS.

    Attributes:
        encryption_key: raw X25519 public key c_u^PK (share envelopes).
        masking_key: raw X25519 public key s_u^PK (pairwise masks).
        signature: Ed25519 signature by the client's identity key over both keys and the session.
    """

    encryption_key: bytes
    masking_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareKeysRequest(_Request):
    """Coordinator -> client, stage SHARE_KEYS.

    Attributes:
        cohort: the clients that advertised keys (U1), increasing.
        encryption_keys: index -> c^PK for every client of U1.
        masking_keys: index -> s^PK for every client of U1.
        signatures: index -> advertisement signature for every client of U1.
        identities: index -> raw Ed25519 identity public key for every client of U1.
    """

    cohort: tuple[int, ...]
    encryption_keys: Mapping[int, bytes]
    masking_keys: Mapping[int, bytes]
    signatures: Mapping[int, bytes]
    identities: Mapping[int, bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareKeysResponse:
    """Client -> coordinator, stage SHARE_KEYS.

    Attributes:
        envelopes: recipient index -> AES-GCM envelope holding the sender's shares for it, one per
            neighbour in U1.
        seed_commitments: holder index -> commitment to that holder's share of the seed b_u, for
            every holder (the sender too in the complete graph); see ``mpc.keys.share_commitment``.
        key_commitments: holder index -> commitment to that holder's share of s_u^SK.
        seed_commitment: commitment to the seed b_u itself (``mpc.keys.seed_commitment``).
    """

    envelopes: Mapping[int, bytes]
    seed_commitments: Mapping[int, bytes]
    key_commitments: Mapping[int, bytes]
    seed_commitment: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskedInputRequest(_Request):
    """Coordinator -> client, stage MASKED_INPUT.

    Attributes:
        cohort: the clients that shared keys (U2), increasing.
        envelopes: sender index -> envelope addressed to this client, one per neighbour in U2.
    """

    cohort: tuple[int, ...]
    envelopes: Mapping[int, bytes]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class MaskedInputResponse:
    """Client -> coordinator, stage MASKED_INPUT.

    Attributes:
        masked: the masked vector, uint32 (ring 2^32) or uint64 (ring 2^64), 4 or 8 bytes per
            parameter.
    """

    masked: npt.NDArray[np.unsignedinteger[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyCheckRequest(_Request):
    """Coordinator -> client, stage CONSISTENCY_CHECK.

    Attributes:
        cohort: the clients whose masked input the coordinator holds (U3), increasing.
    """

    cohort: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyCheckResponse:
    """Client -> coordinator, stage CONSISTENCY_CHECK.

    Attributes:
        signature: Ed25519 signature by the client's identity key over the session and the cohort
            (``mpc.keys.consistency_payload``).
    """

    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskRequest(_Request):
    """Coordinator -> client, stage UNMASK.

    Attributes:
        cohort: the clients whose masked input is in the sum (U3), increasing; it must be the
            cohort this client signed.
        survivors: owners for which this client must reveal its share of the self-mask seed.
        dropped: owners for which this client must reveal its share of the masking key.
        signatures: signer index -> its consistency-check signature over ``cohort``: at least
            the consistency quorum of the clients that answered the consistency check (U4).
    """

    cohort: tuple[int, ...]
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signatures: Mapping[int, bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskResponse:
    """Client -> coordinator, stage UNMASK.

    Attributes:
        self_mask_shares: owner index -> 33-byte share value of the owner's seed b_owner.
        key_shares: owner index -> 33-byte share value of the owner's masking key s_owner^SK.
    """

    self_mask_shares: Mapping[int, bytes]
    key_shares: Mapping[int, bytes]


Request = (
    AdvertiseKeysRequest
    | ShareKeysRequest
    | MaskedInputRequest
    | ConsistencyCheckRequest
    | UnmaskRequest
)
Response = (
    AdvertiseKeysResponse
    | ShareKeysResponse
    | MaskedInputResponse
    | ConsistencyCheckResponse
    | UnmaskResponse
)

RESPONSE_TYPES: Mapping[Stage, type[Any]] = {
    Stage.ADVERTISE_KEYS: AdvertiseKeysResponse,
    Stage.SHARE_KEYS: ShareKeysResponse,
    Stage.MASKED_INPUT: MaskedInputResponse,
    Stage.CONSISTENCY_CHECK: ConsistencyCheckResponse,
    Stage.UNMASK: UnmaskResponse,
}
"""The response type each stage expects."""
