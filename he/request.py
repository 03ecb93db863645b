"""What the coordinator sends the key holder: the owners' individual contributions, not a sum.

Threat model: the coordinator is malicious. Whatever ciphertext it computes itself can be
crafted, and decrypting a crafted ciphertext leaks the secret key (two ciphertexts (0, Delta)
and (0, Delta x^(N/2)) give s(zeta_j) on every slot, hence s) or one owner's input (ct_A plus
encryptions of zero). So the coordinator only *relays*: a REQUEST envelope names the job,
round, attempt and spec, and carries each owner's CONTRIBUTION envelope byte for byte as that
owner signed it. The key holder checks every one (`he.keyholder.KeyHolder.decrypt`) and adds
the ciphertexts itself; nothing the coordinator made is ever decrypted.

The request is a plain container: the key holder trusts none of its fields beyond using them as
the claim each signed receipt must match.
"""

from __future__ import annotations

from dataclasses import dataclass

from he import _wire
from he._spec_dict import spec_from_dict
from he.envelope import (
    MAX_ATTEMPT,
    MAX_ID_LEN,
    MAX_RECEIPTS,
    MAX_ROUND,
    check_attempt,
    check_id,
    check_round,
)
from he.errors import DecodeError, NotAnAggregate, SpecError
from he.masking import Cohort
from he.spec import Spec

DEFAULT_MAX_REQUEST_BYTES = 4 * 1024**3


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptionRequest:
    """The contributions of one round attempt, relayed to the key holder unchanged.

    Attributes:
        job_id: the job every contribution must name.
        round: the round every contribution must name.
        attempt: the attempt every contribution must name.
        spec: the statistic (its digest is signed into every receipt).
        contributions: CONTRIBUTION envelopes, exactly as the owners sent them.
    """

    job_id: str
    round: int
    attempt: int
    spec: Spec
    contributions: tuple[bytes, ...]
    cohort: Cohort | None = None
    """The masking cohort of the attempt when owners masked (`he.masking`), else None."""

    def __post_init__(self) -> None:
        check_id(self.job_id, "job_id")
        check_round(self.round)
        check_attempt(self.attempt)
        if not all(isinstance(c, bytes) for c in self.contributions):
            raise DecodeError("contributions must be bytes (CONTRIBUTION envelopes)")

    def to_bytes(self) -> bytes:
        """The REQUEST envelope: header, then one blob per contribution envelope."""
        header: dict[str, object] = {
            "job_id": self.job_id,
            "round": self.round,
            "attempt": self.attempt,
            "spec": self.spec.to_dict(),
        }
        if self.cohort is not None:
            header["cohort"] = self.cohort.to_json()
        return _wire.encode(_wire.Kind.REQUEST, header, list(self.contributions))

    @classmethod
    def from_bytes(
        cls, data: bytes, *, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    ) -> DecryptionRequest:
        """Parse a REQUEST envelope (the key holder then checks every contribution).

        Raises:
            NotAnAggregate: the bytes are a contribution or a sum someone else assembled.
            DecodeError: malformed bytes.
        """
        what = "decryption request"
        env = _wire.decode(
            data, max_bytes=max_bytes, max_blobs=MAX_RECEIPTS, max_blob_bytes=max_bytes, what=what
        )
        if env.kind is _wire.Kind.CONTRIBUTION:
            raise NotAnAggregate(
                "refusing to decrypt an individual owner contribution; the key holder assembles "
                "sums itself from at least k owners' contributions"
            )
        if env.kind is _wire.Kind.AGGREGATE:
            raise NotAnAggregate(
                "refusing to decrypt a sum the coordinator built: the key holder decrypts only "
                "what it assembles itself from the owners' signed contributions"
            )
        if env.kind is not _wire.Kind.REQUEST:
            raise DecodeError(f"expected a decryption request, got a {env.kind.name.lower()}")
        h = env.header
        try:
            spec = spec_from_dict(_wire.get_dict(h, "spec", what=what))
        except SpecError as exc:
            raise DecodeError(f"request spec is invalid: {exc}") from exc
        return cls(
            job_id=_wire.get_str(h, "job_id", what=what, max_len=MAX_ID_LEN),
            round=_wire.get_int(h, "round", what=what, low=0, high=MAX_ROUND),
            attempt=_wire.get_int(h, "attempt", what=what, low=1, high=MAX_ATTEMPT),
            spec=spec,
            contributions=tuple(bytes(b) for b in env.blobs),
            cohort=Cohort.from_json(h["cohort"]) if "cohort" in h else None,
        )
