"""What the coordinator, the owners and the key holder agree on in an HE job.

An HE job (``job.kind = "stats"``, or training with ``aggregation.kind = "he"``) runs the pure
library :mod:`he` over the stage driver. This module holds what all three roles share: the
parameters a job implies, the key holder's *signed* public context, the enrolment file of the
owners' identity keys, the vector spec of encrypted training updates, and the mapping of
:class:`he.HeError` onto fl_core errors.

Threat model (see ``he/README.md`` for the cryptographic side):

* The key holder signs ``(job name, job file SHA-256, context fingerprint)`` with its Ed25519
  identity key. An owner encrypts only under a context whose signature verifies and whose
  parameters are the job's presets. When the job file (``he.keyholder_key``) or the owner's
  policy (``trusted_keyholders``) names the key holder's key, an owner refuses any other key:
  a coordinator cannot slip in a context of its own and decrypt individual contributions. When
  neither names one, the owner trusts the coordinator to relay the key holder's context
  (honest-but-curious coordinator).
* The key holder checks every receipt against its *own* enrolment (an owner name -> Ed25519
  public key file handed to it by the deployment), never against the coordinator's list of who
  joined. Whoever writes that file decides who counts towards k: the key holder trusts it as
  the list of genuine, distinct owners.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .config import JobConfig
from .errors import ConfigError, PolicyRefused, ProtocolError
from .payload import Payload

if TYPE_CHECKING:
    import he
    from he import Aggregator, DecryptionRequest, HEParams, PublicContext, Release, VectorSpec

    from .client.policy import OwnerPolicy

CONTEXT_LABEL = b"bulwark/he-context/v1"
MAX_CONTEXT_BYTES = 64 << 20
"""Largest public context accepted from the wire (the default presets make about 0.6 MB)."""
MAX_ENVELOPE_BYTES = 1 << 30
"""Largest contribution, aggregate or release accepted from the wire."""
KEY_BYTES = 32
SIGNATURE_BYTES = 64


def needs_keyholder(job: JobConfig) -> bool:
    """Whether the job runs with a key holder (statistics, or HE-aggregated training)."""
    return job.job.kind == "stats" or job.aggregation.kind == "he"


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte Ed25519 public key of ``key``."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def job_params(job: JobConfig) -> tuple[HEParams, ...]:
    """The HE parameters the job's ``[he]`` presets name.

    With ``he.reals = "bfv"`` (the default) only the BFV preset: real values are exact fixed
    point in its plaintext ring (:mod:`he.fixed`). With ``"ckks"``: CKKS for reals, plus BFV for
    the counts of a statistics job.
    """
    import he

    presets = {"ckks_8192": he.CKKS_8192, "bfv_4096": he.BFV_4096, "bfv_8192": he.BFV_8192}
    if job.he.reals == "bfv":
        return (presets[job.he.bfv],)
    if job.job.kind == "stats":
        return (presets[job.he.ckks], presets[job.he.bfv])
    return (presets[job.he.ckks],)


def vector_spec(job: JobConfig, *, length: int) -> VectorSpec:
    """The spec of one encrypted training update ``[w * update, w]`` of ``length`` values.

    Coordinates are clipped to ``he.clip`` and the weight w = min(examples, he.max_weight), so
    every value is at most ``max(clip, 1) * max_weight`` in magnitude. Weights are not normalised:
    the key holder's flooding noise is absolute, so larger sums lose less relative precision.
    """
    import he

    owners = job.he.max_owners or max(job.data.num_clients, 2)
    max_abs = max(job.he.clip, 1.0) * job.he.max_weight
    with map_he_errors("the job's [he] settings"):
        return he.VectorSpec(length=length, max_abs=max_abs, max_owners=owners)


@contextmanager
def map_he_errors(what: str) -> Iterator[None]:
    """Turn an :class:`he.HeError` into a :class:`~fl_core.errors.ProtocolError` naming ``what``."""
    from he import HeError

    try:
        yield
    except HeError as exc:
        raise ProtocolError(f"{what}: {type(exc).__name__}: {exc}") from exc


# --- the signed public context ---------------------------------------------------------------


def context_message(job: JobConfig, fingerprint: str) -> bytes:
    """What the key holder signs: label, job name, job file SHA-256, context fingerprint."""
    parts = (CONTEXT_LABEL, job.job.name.encode(), job.sha256.encode(), fingerprint.encode())
    return b"\0".join(parts)


@dataclass(frozen=True, slots=True)
class SignedContext:
    """The key holder's public context with its signature and its public identity key."""

    context: bytes
    signature: bytes
    key: bytes

    @classmethod
    def create(
        cls, job: JobConfig, public: PublicContext, identity_key: Ed25519PrivateKey
    ) -> SignedContext:
        """Sign ``public`` for ``job`` with the key holder's identity key."""
        signature = identity_key.sign(context_message(job, public.fingerprint))
        return cls(public.to_bytes(), signature, raw_public_key(identity_key))

    def fields(self) -> dict[str, object]:
        """Payload fields ``he.context``, ``he.signature`` and ``he.key``."""
        return {"he.context": self.context, "he.signature": self.signature, "he.key": self.key}

    @classmethod
    def from_payload(cls, payload: Payload) -> SignedContext:
        """Read the three fields, checking their sizes.

        Raises:
            CodecError: a field is missing or has the wrong size.
        """
        return cls(
            payload.get_bytes("he.context", max_size=MAX_CONTEXT_BYTES),
            payload.get_bytes("he.signature", size=SIGNATURE_BYTES),
            payload.get_bytes("he.key", size=KEY_BYTES),
        )

    def open(self, job: JobConfig, *, trusted: Collection[bytes] = ()) -> PublicContext:
        """Check the signature, the signer and the parameters; return the public context.

        Args:
            job: the job (its name, file hash and ``[he]`` presets).
            trusted: raw public keys of acceptable key holders (empty: any signer).

        Raises:
            PolicyRefused: the signer is not a trusted key holder.
            ProtocolError: a bad signature, a malformed context, one that carries a secret key,
                or parameters other than the job's.
        """
        import he

        if trusted and self.key not in trusted:
            raise PolicyRefused(
                f"the public context is signed by key {self.key.hex()[:16]}..., not by a key "
                "holder the owner trusts"
            )
        with map_he_errors("the key holder's public context is refused"):
            public = he.PublicContext.from_bytes(self.context, max_bytes=MAX_CONTEXT_BYTES)
        try:
            Ed25519PublicKey.from_public_bytes(self.key).verify(
                self.signature, context_message(job, public.fingerprint)
            )
        except (InvalidSignature, ValueError) as exc:
            raise ProtocolError(
                "the public context's signature does not verify for this job and key holder"
            ) from exc
        by_scheme = {p.scheme: p for p in public.params}
        if by_scheme != {p.scheme: p for p in job_params(job)}:
            raise ProtocolError(
                "the public context's parameters differ from the job's [he] presets "
                f"(reals {job.he.reals}: {job.he.ckks}, {job.he.bfv})"
            )
        return public


def trusted_keyholders(job: JobConfig, policy: OwnerPolicy) -> frozenset[bytes]:
    """The key holders an owner accepts: the job file's and its policy's (empty: any)."""
    keys = [bytes.fromhex(k) for k in policy.trusted_keyholders]
    if job.he.keyholder_key:
        keys.append(bytes.fromhex(job.he.keyholder_key))
    return frozenset(keys)


def owner_min_contributors(job: JobConfig, policy: OwnerPolicy) -> int:
    """The k an owner signs into its receipts: its own minimum cohort (at least 2).

    Raises:
        PolicyRefused: the job's k is below the owner's minimum (the owner never lowers it).
    """
    if policy.min_cohort > job.he.min_contributors:
        raise PolicyRefused(
            f"the job's k (he.min_contributors = {job.he.min_contributors}) is below the owner's "
            f"minimum cohort of {policy.min_cohort}"
        )
    return max(2, policy.min_cohort)


# --- enrolment -------------------------------------------------------------------------------


def load_enrolment(path: str | Path) -> dict[str, bytes]:
    """Read an enrolment file: TOML ``owner-name = "hex Ed25519 public key"`` lines.

    Raises:
        ConfigError: the file is unreadable, or an entry is not a 32-byte hex key (named).
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read enrolment file {path}: {exc}") from exc
    return parse_enrolment(raw, where=str(path))


def parse_enrolment(raw: Mapping[str, object], *, where: str = "enrolment") -> dict[str, bytes]:
    """Check an enrolment table (owner name -> hex key) and return raw keys.

    Raises:
        ConfigError: naming the entry that is wrong.
    """
    out: dict[str, bytes] = {}
    for name, value in raw.items():
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a hex string (an Ed25519 public key)")
        try:
            key = bytes.fromhex(value)
            Ed25519PublicKey.from_public_bytes(key)
        except ValueError as exc:
            raise ConfigError(
                f"{where}: {name} = {value[:70]!r} is not a 32-byte Ed25519 public key in hex"
            ) from exc
        out[name] = key
    if len(out) < 2:
        raise ConfigError(f"{where}: an enrolment must list at least 2 owners, got {len(out)}")
    return out


def enrolment_toml(keys: Mapping[str, bytes]) -> str:
    """The enrolment file for ``keys`` (owner name -> raw public key)."""
    lines = ["# owner name = raw Ed25519 identity public key (hex)"]
    lines += [f'"{name}" = "{key.hex()}"' for name, key in sorted(keys.items())]
    return "\n".join(lines) + "\n"


@contextmanager
def reject_he_errors(what: str) -> Iterator[None]:
    """Turn an :class:`he.HeError` into a :class:`~fl_core.errors.CodecError`: a rejected result."""
    from he import HeError

    from .errors import CodecError

    try:
        yield
    except HeError as exc:
        raise CodecError(f"{what}: {type(exc).__name__}: {exc}") from exc


def check_release_against(
    release: Release, request: DecryptionRequest | None, aggregator: Aggregator | None
) -> None:
    """Check a key holder's release against the request the coordinator relayed to it.

    The key holder may leave out a contribution it refuses (its reason is in its refusals), so
    the release's contributors are a subset of the relayed ones, never anyone else.

    Raises:
        CodecError: another job, round or statistic, or contributors that were not relayed.
    """
    from .errors import CodecError

    if request is None or aggregator is None:
        raise CodecError("no decryption request was sent this round")
    if (release.job_id, release.round) != (request.job_id, request.round):
        raise CodecError("the release is not for this round's decryption request")
    if release.spec.digest != request.spec.digest:
        raise CodecError("the release holds another statistic than the request's")
    names = list(release.contributors)
    if len(set(names)) != len(names) or not set(names) <= set(aggregator.contributors):
        raise CodecError("the release names contributors the coordinator did not relay")


# --- owner-side masking (he.masking) over the stage driver ------------------------------------

STAGE_KEYS = "he.keys"


def masked(job: JobConfig) -> bool:
    """Whether the job's owners mask their plaintexts (``he.masking`` with BFV reals)."""
    return job.he.masking and job.he.reals == "bfv"


def advertisement_fields(advertisement: he.MaskAdvertisement) -> dict[str, object]:
    """Payload fields of an owner's ``he.keys`` answer."""
    return {"he.mask_key": advertisement.public_key, "he.mask_signature": advertisement.signature}


def advertisement_from_payload(payload: Payload, owner: str) -> he.MaskAdvertisement:
    """An owner's ``he.keys`` answer, sizes checked.

    The signature is checked by each owner and by the key holder against their own enrolment.
    """
    import he

    return he.MaskAdvertisement(
        owner_id=owner,
        public_key=payload.get_bytes("he.mask_key", size=KEY_BYTES),
        signature=payload.get_bytes("he.mask_signature", size=SIGNATURE_BYTES),
    )


def cohort_fields(cohort: he.Cohort, identities: Mapping[str, bytes]) -> dict[str, object]:
    """Payload fields of the ``he.contribute`` task: the cohort and its relayed identities."""
    peers = {name: identities.get(name, b"").hex() for name in cohort.owners}
    return {"he.cohort": cohort.to_bytes(), "he.peers": enrolment_json(peers)}


def enrolment_json(peers: Mapping[str, str]) -> bytes:
    """Owner name -> hex key, as canonical JSON bytes."""
    import json

    return json.dumps(dict(sorted(peers.items())), separators=(",", ":")).encode()


def owner_masking(
    job: JobConfig,
    policy: OwnerPolicy,
    payload: Payload,
    key: he.MaskingKey | None,
    *,
    k: int,
    own_identity: bytes,
    roster_owners: Mapping[str, bytes] | None = None,
) -> he.Masking | None:
    """The owner's masking for ``he.contribute``, computed from its own job and policy.

    The cohort's members are checked against the owner's pinned peer keys: the verified
    roster's owners when it has a roster, else ``policy.peer_keys``, and only when neither
    exists against the identities the coordinator relays.

    Raises:
        PolicyRefused: the job is masked but the task carries no cohort or this owner advertised
            no key this attempt.
        CodecError: a malformed cohort or identity list.
    """
    import json

    import he

    from .errors import CodecError

    if not masked(job):
        return None
    if key is None or "he.cohort" not in payload:
        raise PolicyRefused(
            "this job masks contributions (he.masking): the task carries no cohort, or this "
            "owner advertised no masking key for this attempt"
        )
    try:
        cohort = he.Cohort.from_bytes(payload.get_bytes("he.cohort", max_size=MAX_CONTEXT_BYTES))
        pinned = dict(roster_owners) if roster_owners else policy.pinned_peers()
        if pinned:
            peers = pinned
        else:
            raw = json.loads(payload.get_bytes("he.peers", max_size=MAX_CONTEXT_BYTES))
            peers = {str(n): bytes.fromhex(str(v)) for n, v in dict(raw).items()}
    except (he.HeError, ValueError, TypeError) as exc:
        raise CodecError(f"the masking cohort is malformed: {exc}") from exc
    peers[key.owner_id] = own_identity  # the owner knows its own key
    with map_he_errors("the masking cohort is refused"):  # before anything is trained or sent
        cohort.check(he.envelope.load_enrolment(peers), min_size=k)
    return he.Masking(key, cohort, peers, min_size=k)
