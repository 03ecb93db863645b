"""Signed contributions and the aggregate envelope: what binds a ciphertext to its job.

Threat model (a malicious coordinator, enrolled owners):

* Every owner contribution carries a *receipt*: job id, round, attempt, context fingerprint,
  spec digest, payload kind, owner id, the owner's own minimum cohort k, and the SHA-256 and
  size of its ciphertexts, signed with the owner's Ed25519 key. The coordinator checks receipts
  against the enrolment before adding, so a ciphertext from outside the job, round, key or spec
  is refused before any arithmetic.
* The key holder never decrypts a sum the coordinator built (an AGGREGATE envelope, kept for
  callers that want the coordinator's encrypted sum, is refused): it receives the contribution
  envelopes themselves (`he.request`), verifies each receipt against its own copy of the
  enrolment, checks each ciphertext against the receipt's digest, and adds them itself.

Collusion between the coordinator and the key holder, or with an enrolled owner that signs a
crafted ciphertext, is discussed in he/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from he import _wire
from he._spec_dict import spec_from_dict
from he.errors import BindingError, ContextMismatch, DecodeError, NotAnAggregate, SpecError
from he.spec import Spec, StatsSpec

MAX_ID_LEN = 128
MAX_ROUND = 2**53
MAX_ATTEMPT = 2**31
MAX_RECEIPTS = 2**20
DEFAULT_MAX_ENVELOPE_BYTES = 4 * 1024**3


def payload_of(spec: Spec) -> str:
    """The payload kind a spec produces ("statistics" or "vector")."""
    return "statistics" if isinstance(spec, StatsSpec) else "vector"


def check_id(value: str, name: str) -> str:
    """A job or owner id: 1..128 printable characters."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LEN or not value.isprintable():
        raise BindingError(f"{name} must be 1..{MAX_ID_LEN} printable characters")
    return value


def check_round(value: int) -> int:
    """A round number: an integer in [0, 2^53]."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ROUND:
        raise BindingError(f"round must be an integer in [0, {MAX_ROUND}]")
    return value


def check_attempt(value: int) -> int:
    """An attempt number: an integer in [1, 2^31]."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ATTEMPT:
        raise BindingError(f"attempt must be an integer in [1, {MAX_ATTEMPT}]")
    return value


def check_min_contributors(value: int) -> int:
    """An owner's minimum cohort: an integer >= 2."""
    if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= 2**20:
        raise BindingError(f"min_contributors must be an integer in [2, 2^20], got {value!r}")
    return value


def load_enrolment(enrolment: Mapping[str, bytes]) -> dict[str, Ed25519PublicKey]:
    """Owner id -> raw 32-byte Ed25519 public key, loaded and checked."""
    keys: dict[str, Ed25519PublicKey] = {}
    for owner_id, raw in enrolment.items():
        check_id(owner_id, "enrolled owner id")
        try:
            keys[owner_id] = Ed25519PublicKey.from_public_bytes(bytes(raw))
        except ValueError as exc:
            raise BindingError(f"enrolment key of {owner_id!r} is not an Ed25519 key") from exc
    if len(keys) < 2:
        raise BindingError("enrolment must list at least 2 owners")
    return keys


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """An owner's signed statement of what it contributed, to which job."""

    job_id: str
    round: int
    attempt: int
    fingerprint: str
    spec_digest: str
    payload: str
    owner_id: str
    min_contributors: int
    ciphertext_digest: str
    ciphertext_bytes: int
    signature: bytes
    cohort: str = ""
    """SHA-256 of the masking cohort the plaintexts are masked for ("" when not masked)."""

    def fields(self) -> dict[str, Any]:
        """The signed fields."""
        return {
            "job_id": self.job_id,
            "round": self.round,
            "attempt": self.attempt,
            "fingerprint": self.fingerprint,
            "spec_digest": self.spec_digest,
            "payload": self.payload,
            "owner_id": self.owner_id,
            "min_contributors": self.min_contributors,
            "ciphertext_digest": self.ciphertext_digest,
            "ciphertext_bytes": self.ciphertext_bytes,
            "cohort": self.cohort,
        }

    def to_json(self) -> dict[str, Any]:
        """The receipt as a JSON object (fields plus hex signature)."""
        return {"fields": self.fields(), "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, value: Any) -> Receipt:
        """Parse a receipt (no signature check; see `verify`)."""
        what = "receipt"
        if not isinstance(value, dict):
            raise DecodeError("receipt must be an object")
        f = _wire.get_dict(value, "fields", what=what)
        sig = _wire.get_str(value, "signature", what=what, max_len=128)
        try:
            signature = bytes.fromhex(sig)
        except ValueError as exc:
            raise DecodeError("receipt signature is not hex") from exc
        return cls(
            job_id=_wire.get_str(f, "job_id", what=what, max_len=MAX_ID_LEN),
            round=_wire.get_int(f, "round", what=what, low=0, high=MAX_ROUND),
            attempt=_wire.get_int(f, "attempt", what=what, low=1, high=MAX_ATTEMPT),
            fingerprint=_wire.get_str(f, "fingerprint", what=what, max_len=64),
            spec_digest=_wire.get_str(f, "spec_digest", what=what, max_len=64),
            payload=_wire.get_str(f, "payload", what=what, max_len=16),
            owner_id=_wire.get_str(f, "owner_id", what=what, max_len=MAX_ID_LEN),
            min_contributors=_wire.get_int(f, "min_contributors", what=what, low=2, high=2**20),
            ciphertext_digest=_wire.get_str(f, "ciphertext_digest", what=what, max_len=64),
            ciphertext_bytes=_wire.get_int(f, "ciphertext_bytes", what=what, low=0, high=2**62),
            signature=signature,
            cohort=_cohort_field(f),
        )

    def verify(
        self,
        keys: Mapping[str, Ed25519PublicKey],
        *,
        job_id: str,
        round: int,
        fingerprint: str,
        spec: Spec,
        attempt: int | None = None,
    ) -> None:
        """Check that the receipt is bound to this job and signed by its enrolled owner.

        ``attempt`` None accepts any attempt (the coordinator's aggregator, which runs per
        attempt anyway); the key holder always passes the attempt it is decrypting.

        Raises:
            ContextMismatch: another context fingerprint.
            BindingError: another job, round, attempt, spec or payload; unknown owner; bad
                signature.
        """
        if self.fingerprint != fingerprint:
            raise ContextMismatch(
                f"contribution of {self.owner_id!r} is under context {self.fingerprint[:16]}..., "
                f"not {fingerprint[:16]}..."
            )
        expected: dict[str, object] = {
            "job_id": job_id,
            "round": round,
            "spec_digest": spec.digest,
            "payload": payload_of(spec),
        }
        if attempt is not None:
            expected["attempt"] = attempt
        for key, value in expected.items():
            if getattr(self, key) != value:
                raise BindingError(
                    f"contribution of {self.owner_id!r} has {key} {getattr(self, key)!r}, "
                    f"this job expects {value!r}"
                )
        public_key = keys.get(self.owner_id)
        if public_key is None:
            raise BindingError(f"owner {self.owner_id!r} is not enrolled in this job")
        try:
            public_key.verify(self.signature, _wire.canonical_json(self.fields()))
        except InvalidSignature as exc:
            raise BindingError(f"receipt of {self.owner_id!r} has an invalid signature") from exc


def _cohort_field(fields: dict[str, Any]) -> str:
    """A receipt's cohort digest: "" (unmasked) or 64 hex digits."""
    value = fields.get("cohort")
    if not isinstance(value, str) or not (
        value == "" or (len(value) == 64 and all(c in "0123456789abcdef" for c in value))
    ):
        raise DecodeError("receipt field 'cohort' must be empty or a SHA-256 in hex")
    return value


def sign_receipt(signing_key: Ed25519PrivateKey, **fields: Any) -> Receipt:
    """Sign the receipt fields with the owner's key."""
    unsigned = Receipt(signature=b"", **fields)
    return Receipt(signature=signing_key.sign(_wire.canonical_json(unsigned.fields())), **fields)


def encode_contribution(receipt: Receipt, bfv: list[bytes], ckks: list[bytes]) -> bytes:
    """A CONTRIBUTION envelope: receipt, then the BFV and CKKS ciphertexts."""
    header = {"receipt": receipt.to_json(), "n_bfv": len(bfv), "n_ckks": len(ckks)}
    return _wire.encode(_wire.Kind.CONTRIBUTION, header, [*bfv, *ckks])


def decode_contribution(
    data: bytes, *, max_blobs: int, max_blob_bytes: int, check_digest: bool = True
) -> tuple[Receipt, tuple[bytes, ...], tuple[bytes, ...], memoryview | bytes]:
    """Parse a CONTRIBUTION envelope and check its ciphertext digest (not its signature).

    Returns the receipt, the BFV and CKKS ciphertexts, and the section of ``data`` the receipt's
    ``ciphertext_digest`` covers. With ``check_digest=False`` only the ciphertexts' total size
    is checked here; the caller must then compare `_wire.digest_section` of that section with
    the receipt before using them (the aggregator does so on another core while it parses the
    ciphertexts).
    """
    env = _wire.decode(
        data,
        max_bytes=max_blobs * max_blob_bytes + _wire.MAX_HEADER_BYTES,
        max_blobs=max_blobs,
        max_blob_bytes=max_blob_bytes,
        what="contribution",
    )
    if env.kind is not _wire.Kind.CONTRIBUTION:
        raise DecodeError(f"expected a contribution, got a {env.kind.name.lower()}")
    receipt = Receipt.from_json(env.header.get("receipt"))
    n_bfv = _wire.get_int(env.header, "n_bfv", what="contribution", low=0, high=len(env.blobs))
    size = sum(len(b) for b in env.blobs)
    if size != receipt.ciphertext_bytes or (
        check_digest and _wire.digest_section(env.blob_section) != receipt.ciphertext_digest
    ):
        raise digest_mismatch(receipt)
    return receipt, env.blobs[:n_bfv], env.blobs[n_bfv:], env.blob_section


def digest_mismatch(receipt: Receipt) -> BindingError:
    """The error for ciphertexts that are not the ones the receipt signed."""
    return BindingError(f"ciphertexts of {receipt.owner_id!r} do not match its receipt")


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptedAggregate:
    """The coordinator's sum of contributions, with every contributor's receipt.

    Built by `he.aggregate.Aggregator.result`; decrypted only by `he.keyholder.KeyHolder`.
    """

    job_id: str
    round: int
    fingerprint: str
    spec: Spec
    receipts: tuple[Receipt, ...]
    bfv: tuple[bytes, ...]
    ckks: tuple[bytes, ...]

    @property
    def contributors(self) -> tuple[str, ...]:
        """Owner ids, in the order their contributions were added."""
        return tuple(r.owner_id for r in self.receipts)

    def to_bytes(self) -> bytes:
        """The AGGREGATE envelope."""
        header = {
            "job_id": self.job_id,
            "round": self.round,
            "fingerprint": self.fingerprint,
            "spec": self.spec.to_dict(),
            "receipts": [r.to_json() for r in self.receipts],
            "n_bfv": len(self.bfv),
        }
        return _wire.encode(_wire.Kind.AGGREGATE, header, [*self.bfv, *self.ckks])

    @classmethod
    def from_bytes(
        cls, data: bytes, *, max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES
    ) -> EncryptedAggregate:
        """Parse an AGGREGATE envelope (the key holder then verifies it).

        Raises:
            NotAnAggregate: the bytes are an individual contribution.
            DecodeError: malformed bytes.
        """
        what = "aggregate"
        env = _wire.decode(
            data, max_bytes=max_bytes, max_blobs=2**20, max_blob_bytes=max_bytes, what=what
        )
        if env.kind is _wire.Kind.CONTRIBUTION:
            raise NotAnAggregate(
                "refusing to decrypt an individual owner contribution; the key holder decrypts "
                "only aggregates"
            )
        if env.kind is not _wire.Kind.AGGREGATE:
            raise DecodeError(f"expected an aggregate, got a {env.kind.name.lower()}")
        h = env.header
        raw = _wire.get_list(h, "receipts", what=what, max_len=MAX_RECEIPTS)
        n_bfv = _wire.get_int(h, "n_bfv", what=what, low=0, high=len(env.blobs))
        try:
            spec = spec_from_dict(_wire.get_dict(h, "spec", what=what))
        except SpecError as exc:
            raise DecodeError(f"aggregate spec is invalid: {exc}") from exc
        return cls(
            job_id=_wire.get_str(h, "job_id", what=what, max_len=MAX_ID_LEN),
            round=_wire.get_int(h, "round", what=what, low=0, high=MAX_ROUND),
            fingerprint=_wire.get_str(h, "fingerprint", what=what, max_len=64),
            spec=spec,
            receipts=tuple(Receipt.from_json(item) for item in raw),
            bfv=env.blobs[:n_bfv],
            ckks=env.blobs[n_bfv:],
        )
