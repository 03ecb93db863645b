"""Pairwise zero-sum masks in BFV's plaintext ring: the key holder learns only the sum.

Threat model: the key holder is curious and may pool what it holds with the coordinator (every
ciphertext, the secret key, every public value of the round). Owners therefore mask their
plaintexts before encrypting them, so that decrypting one owner's ciphertext gives a value
uniform on Z_t, and only the sum over the whole cohort is meaningful:

    y_i = x_i + sum_{j in C, j != i} sign(i, j) * PRG(k_ij)   (mod t)

with C the round attempt's cohort, k_ij a key both i and j derive from their X25519 agreement
(`mpc.keys.agree`, `mpc.keys.derive_key` with purpose HE_PAIRWISE_MASK, salted with the cohort
digest and bound to job, round and attempt), PRG the AES-256-CTR stream read uniformly on Z_t by
rejection (`mpc.prg.expand_mod`) and sign the one rule of `mpc.masks.pairwise_sign` on the
owners' positions in C (sorted by owner id). Summed over all of C the masks cancel exactly, so
the key holder's sum is the true sum (BFV decrypts exactly); over any other set they do not.

Steps (owner side, `MaskingKey.generate`, then `cohort_masks`):
    1. draw a fresh X25519 key pair for this (job, round, attempt) and sign its public key with
       the owner's Ed25519 identity key (`MaskAdvertisement`);
    2. the coordinator relays every advertisement of the attempt (`Cohort`); the owner checks
       each signature against its own enrolment, that it is in the cohort with its own key, that
       owners and keys are distinct and that the cohort has at least k owners;
    3. it derives one mask per peer, adds them with their signs to its integers (counts,
       histograms, fixed-point reals) mod t, encrypts, and signs the cohort digest into its
       receipt.

Dropouts: masks cancel only when every owner of the cohort contributed. The key holder checks
this (`he.keyholder`) and refuses an incomplete cohort, naming who is missing; the round attempt
is then restarted with fresh keys and the owners still alive as the new cohort (DESIGN: a retried
round starts fresh). This replaces SecAgg's in-round unmasking (Bonawitz et al. section 4, round
4): revealing the dropped owner's mask keys to someone who may also hold its ciphertext is the
step a lying coordinator exploits, and with the key holder able to decrypt every ciphertext,
that someone could be the pooled key holder and coordinator. Restarting reveals nothing: masks
are fresh per attempt and the key holder decrypts nothing of an incomplete attempt.

What it guarantees: the key holder and the coordinator together, and up to c colluding enrolled
owners, learn about an honest owner's input only the sum of the honest owners' inputs, as long as
each honest owner's cohort holds at least one other honest owner (with k >= c + 2 and peers
checked against a pinned enrolment, the coordinator cannot fill a cohort with its own keys).
A coordinator that sends owners different cohorts only makes the masks not cancel: the key holder
requires every contribution to name the same cohort digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from he import _wire
from he.envelope import MAX_ATTEMPT, MAX_ID_LEN, MAX_ROUND, check_attempt, check_id, check_round
from he.errors import BindingError, DecodeError
from mpc.errors import MpcError
from mpc.keys import Purpose, agree, derive_key, encode_fields, load_x25519_public, public_bytes
from mpc.masks import pairwise_sign
from mpc.prg import expand_mod

_ADVERTISEMENT_LABEL = b"bulwark/he/v1/mask-key"
_COHORT_LABEL = b"bulwark/he/v1/cohort"
MAX_COHORT = 1 << 16


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskAdvertisement:
    """An owner's masking public key for one round attempt, signed with its identity key."""

    owner_id: str
    public_key: bytes
    signature: bytes

    def payload(self, *, job_id: str, round: int, attempt: int) -> bytes:
        """What the owner signs."""
        return encode_fields(
            _ADVERTISEMENT_LABEL, job_id, round, attempt, self.owner_id, self.public_key
        )

    def to_json(self) -> dict[str, str]:
        """The advertisement as a JSON object (hex keys)."""
        return {
            "owner_id": self.owner_id,
            "public_key": self.public_key.hex(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, value: Any) -> MaskAdvertisement:
        """Parse an advertisement (sizes checked; the signature is checked by `Cohort.check`)."""
        what = "mask advertisement"
        if not isinstance(value, dict):
            raise DecodeError(f"{what} must be an object")
        try:
            key = bytes.fromhex(_wire.get_str(value, "public_key", what=what, max_len=64))
            sig = bytes.fromhex(_wire.get_str(value, "signature", what=what, max_len=128))
        except ValueError as exc:
            raise DecodeError(f"{what}: keys must be hex") from exc
        if len(key) != 32 or len(sig) != 64:
            raise DecodeError(f"{what}: a 32-byte key and a 64-byte signature expected")
        owner = _wire.get_str(value, "owner_id", what=what, max_len=MAX_ID_LEN)
        return cls(owner_id=owner, public_key=key, signature=sig)


@dataclass(frozen=True, slots=True)
class MaskingKey:
    """An owner's X25519 masking key for one round attempt (in memory only)."""

    owner_id: str
    job_id: str
    round: int
    attempt: int
    private: X25519PrivateKey = field(repr=False)

    @classmethod
    def generate(
        cls,
        *,
        identity_key: Ed25519PrivateKey,
        owner_id: str,
        job_id: str,
        round: int,
        attempt: int,
    ) -> tuple[MaskingKey, MaskAdvertisement]:
        """Step 1: a fresh key pair (OS CSPRNG) and its signed advertisement."""
        key = cls(
            check_id(owner_id, "owner_id"),
            check_id(job_id, "job_id"),
            check_round(round),
            check_attempt(attempt),
            X25519PrivateKey.generate(),
        )
        unsigned = MaskAdvertisement(
            owner_id=owner_id, public_key=public_bytes(key.private), signature=b""
        )
        payload = unsigned.payload(job_id=job_id, round=round, attempt=attempt)
        return key, MaskAdvertisement(
            owner_id=owner_id,
            public_key=unsigned.public_key,
            signature=identity_key.sign(payload),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Cohort:
    """Every masking advertisement of one round attempt, as the coordinator relays them."""

    job_id: str
    round: int
    attempt: int
    advertisements: tuple[MaskAdvertisement, ...]

    @property
    def owners(self) -> tuple[str, ...]:
        """Owner ids, sorted: an owner's position is its index for the sign rule."""
        return tuple(sorted(a.owner_id for a in self.advertisements))

    @property
    def digest(self) -> str:
        """SHA-256 (hex) over job, round, attempt and every (owner, key), in owner order."""
        h = hashlib.sha256(_COHORT_LABEL)
        h.update(encode_fields(self.job_id, self.round, self.attempt, len(self.advertisements)))
        for a in sorted(self.advertisements, key=lambda a: a.owner_id):
            h.update(encode_fields(a.owner_id, a.public_key))
        return h.hexdigest()

    def check(self, keys: Mapping[str, Ed25519PublicKey], *, min_size: int) -> None:
        """Step 2: every advertisement signed by its enrolled owner; distinct; at least k.

        Raises:
            BindingError: naming the owner or rule that fails.
        """
        owners = [a.owner_id for a in self.advertisements]
        if len(set(owners)) != len(owners):
            raise BindingError("the cohort lists an owner twice")
        if len({a.public_key for a in self.advertisements}) != len(owners):
            raise BindingError("the cohort lists one masking key twice")
        if len(owners) < min_size:
            raise BindingError(f"the cohort has {len(owners)} owners; at least {min_size} needed")
        for a in self.advertisements:
            identity = keys.get(a.owner_id)
            if identity is None:
                raise BindingError(f"cohort member {a.owner_id!r} is not enrolled")
            payload = a.payload(job_id=self.job_id, round=self.round, attempt=self.attempt)
            try:
                identity.verify(a.signature, payload)
            except InvalidSignature as exc:
                raise BindingError(
                    f"the masking key of {a.owner_id!r} is not signed by its enrolled identity"
                ) from exc

    def to_json(self) -> dict[str, Any]:
        """The cohort as a JSON object."""
        return {
            "job_id": self.job_id,
            "round": self.round,
            "attempt": self.attempt,
            "advertisements": [a.to_json() for a in self.advertisements],
        }

    @classmethod
    def from_json(cls, value: Any) -> Cohort:
        """Parse a cohort (signatures are checked by `check`)."""
        what = "cohort"
        if not isinstance(value, dict):
            raise DecodeError(f"{what} must be an object")
        raw = _wire.get_list(value, "advertisements", what=what, max_len=MAX_COHORT)
        return cls(
            job_id=_wire.get_str(value, "job_id", what=what, max_len=MAX_ID_LEN),
            round=_wire.get_int(value, "round", what=what, low=0, high=MAX_ROUND),
            attempt=_wire.get_int(value, "attempt", what=what, low=1, high=MAX_ATTEMPT),
            advertisements=tuple(MaskAdvertisement.from_json(a) for a in raw),
        )

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes."""
        return _wire.canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> Cohort:
        """Parse `to_bytes` output.

        Raises:
            DecodeError: malformed bytes.
        """
        import json

        if len(data) > MAX_COHORT * 512:
            raise DecodeError("cohort is too large")
        try:
            value = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(f"cohort is not JSON: {exc}") from exc
        return cls.from_json(value)


def cohort_masks(
    key: MaskingKey,
    cohort: Cohort,
    *,
    keys: Mapping[str, Ed25519PublicKey],
    min_size: int,
    length: int,
    modulus: int,
) -> npt.NDArray[np.int64]:
    """Steps 2 and 3: check the cohort, then this owner's total mask on Z_modulus.

    Args:
        key: this owner's masking key of this attempt.
        cohort: the attempt's cohort as relayed.
        keys: the owner's own enrolment (owner id -> Ed25519 identity key), never the
            coordinator's list.
        min_size: the smallest cohort the owner accepts (its k).
        length: how many values the owner masks.
        modulus: BFV's plain modulus t.

    Raises:
        BindingError: the cohort is for another attempt, lacks this owner or its key, or fails
            `Cohort.check`.
    """
    if (cohort.job_id, cohort.round, cohort.attempt) != (key.job_id, key.round, key.attempt):
        raise BindingError("the cohort is for another job, round or attempt than this key")
    cohort.check(keys, min_size=min_size)
    mine = public_bytes(key.private)
    by_owner = {a.owner_id: a.public_key for a in cohort.advertisements}
    if by_owner.get(key.owner_id) != mine:
        raise BindingError(f"the cohort does not hold {key.owner_id!r} with its own masking key")
    owners = cohort.owners
    me = owners.index(key.owner_id)
    session = bytes.fromhex(cohort.digest)
    context = encode_fields(cohort.job_id, cohort.round, cohort.attempt)
    total = np.zeros(length, dtype=np.int64)
    try:
        for peer, owner in enumerate(owners):
            if peer == me:
                continue
            secret = agree(key.private, load_x25519_public(by_owner[owner]))
            mask_key = derive_key(
                secret,
                purpose=Purpose.HE_PAIRWISE_MASK,
                session_id=session,
                context=context,
                parties=(min(me, peer), max(me, peer)),
            )
            mask = expand_mod(mask_key, length, modulus=modulus)
            if pairwise_sign(me, peer) > 0:
                total = (total + mask) % modulus
            else:
                total = (total - mask) % modulus
    except MpcError as exc:
        raise BindingError(f"masking failed: {exc}") from exc
    return total


@dataclass(frozen=True, slots=True)
class Masking:
    """What an owner masks with: its key, the relayed cohort, its own enrolment and its k."""

    key: MaskingKey
    cohort: Cohort
    enrolment: Mapping[str, bytes] = field(repr=False)
    min_size: int = 2

    def mask(self, length: int, *, modulus: int) -> npt.NDArray[np.int64]:
        """This owner's total mask (see `cohort_masks`)."""
        from he.envelope import load_enrolment

        return cohort_masks(
            self.key,
            self.cohort,
            keys=load_enrolment(self.enrolment),
            min_size=self.min_size,
            length=length,
            modulus=modulus,
        )


def apply_mask(
    values: npt.NDArray[np.int64], mask: npt.NDArray[np.int64], *, modulus: int
) -> npt.NDArray[np.int64]:
    """``values + mask`` mod t, centred on (-t/2, t/2] as BFV encodes signed integers."""
    out = (values % modulus + mask) % modulus
    return np.where(out > modulus // 2, out - modulus, out).astype(np.int64)


def owners_of(advertisements: Sequence[MaskAdvertisement]) -> list[str]:
    """The owner ids of some advertisements, sorted."""
    return sorted(a.owner_id for a in advertisements)
