"""The HE key holder as a participant: it dials out to the coordinator like a data owner does.

:class:`KeyholderParticipant` (role ``"keyholder"``) holds the :class:`he.KeyHolder`, whose secret
key lives in this process's memory only, and answers two stages:

* ``he.context``: the public context (no secret key), signed with the key holder's Ed25519
  identity key for this job (:class:`fl_core.he_job.SignedContext`);
* ``he.decrypt``: the owners' contributions in, as the coordinator relayed them
  (``he.request``, a :class:`he.DecryptionRequest`), a release envelope out. The key holder
  never decrypts a ciphertext the coordinator made: :meth:`he.KeyHolder.decrypt` checks each
  contribution (signature against the key holder's own enrolment, job, round, attempt,
  statistic, parameters, level, scale), adds them itself, and decrypts that sum only, once per
  (job, round, statistic). An aggregate envelope (the coordinator's own sum) is refused.

Steps of :meth:`KeyholderParticipant.decrypt`:
    1. parse the request (a contribution or an aggregate is refused outright);
    2. check that it names this job, the task's round and attempt, and the job's spec;
    3. let :meth:`he.KeyHolder.decrypt` check every contribution, apply k, add, decrypt, flood
       (s from the job: total statistical distance at most 2^-64) and round.
Every refusal is recorded with its reason and logged
(:attr:`KeyholderParticipant.decryption_refusals`).

Trust: the enrolment (owner name -> Ed25519 public key) is given to the key holder by the
deployment (``bulwark keyholder --enrolment FILE``, or a signed roster's owner keys,
``Roster.keys("owner")``), never taken from the coordinator, which could otherwise enrol sock
puppets to reach k. In a simulation it is built from the simulated owners' keys
(:class:`SimulatedKeys`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from .audit import AuditLog
from .client.policy import OwnerPolicy
from .client.runtime import ClientOptions, Participant
from .config import JobConfig
from .errors import ConfigError, PolicyRefused
from .federation import Roster
from .he_job import (
    MAX_ENVELOPE_BYTES,
    SignedContext,
    enrolment_toml,
    job_params,
    needs_keyholder,
    raw_public_key,
    vector_spec,
)
from .payload import Payload
from .transport.base import Task

if TYPE_CHECKING:
    import he

log = logging.getLogger("bulwark.keyholder")

STAGE_CONTEXT = "he.context"
STAGE_DECRYPT = "he.decrypt"
DEFAULT_NAME = "keyholder"


class KeyholderParticipant(Participant):
    """The key holder of one HE job.

    Args:
        job: the job file (its ``[he]`` table sets parameters, k, flooding and budget).
        enrolment: owner name -> raw Ed25519 public key, from the deployment (not the coordinator).
        name: the name it joins under.
        identity_key: its Ed25519 identity key (signs the public context; fresh when omitted).
        min_contributors: a k above the job's (never below it).
        options: timing of retries and polls.
        audit: the key holder's audit log (contexts published, aggregates decrypted, refusals).
        tls: whether its connection to the coordinator is TLS (recorded in the audit log).

    Raises:
        ConfigError: the job needs no key holder, k would go down, or the enrolment or
            parameters are refused.
    """

    role = "keyholder"

    def __init__(
        self,
        *,
        job: JobConfig,
        enrolment: Mapping[str, bytes],
        name: str = DEFAULT_NAME,
        identity_key: Ed25519PrivateKey | None = None,
        min_contributors: int | None = None,
        options: ClientOptions | None = None,
        roster: Roster | None = None,
        audit: AuditLog | None = None,
        tls: bool | None = None,
    ) -> None:
        import he

        super().__init__(
            name=name,
            job=job,
            identity_key=identity_key,
            options=options,
            roster=roster,
            audit=audit,
            tls=tls,
        )
        if not needs_keyholder(job):
            raise ConfigError(
                "this job needs no key holder (job.kind is not 'stats' and aggregation.kind is "
                "not 'he')"
            )
        k = job.he.min_contributors if min_contributors is None else min_contributors
        if k < job.he.min_contributors:
            raise ConfigError(
                f"the key holder's k = {k} is below the job's he.min_contributors = "
                f"{job.he.min_contributors}; k can only be raised"
            )
        try:
            self._holder = he.KeyHolder.generate(
                job_params(job),
                min_contributors=k,
                enrolment=enrolment,
                flood_bits=job.he.flood_bits,
                max_decryptions=max_decryptions(job),
            )
        except he.HeError as exc:
            raise ConfigError(f"key holder: {exc}") from exc
        self._spec_digest = job.stats.spec().digest if job.stats is not None else ""
        self._signed = SignedContext.create(job, self._holder.public_context(), self.identity_key)
        self._refusals: list[he.Refusal] = []
        self._lock = threading.Lock()

    @property
    def min_contributors(self) -> int:
        """The key holder's k."""
        return self._holder.min_contributors

    def public_context(self) -> he.PublicContext:
        """The public context this key holder publishes (no secret key)."""
        return self._holder.public_context()

    @property
    def decryption_log(self) -> tuple[he.DecryptionRecord, ...]:
        """Every decryption so far."""
        return self._holder.decryption_log

    @property
    def decryption_refusals(self) -> tuple[he.Refusal, ...]:
        """Every request refused so far, with its reason (contributions left out included)."""
        with self._lock:
            return tuple(self._refusals)

    def check_job(self) -> None:
        """Refuse a job that has no use for a key holder."""
        if not needs_keyholder(self.job):
            raise PolicyRefused("this job needs no key holder")

    def handle(self, task: Task) -> Payload:
        """Publish the signed public context, or decrypt an aggregate."""
        header = task.header
        if header.job_id != self.job.job.name:
            raise PolicyRefused(f"task for job {header.job_id!r}, not {self.job.job.name!r}")
        if header.stage == STAGE_CONTEXT:
            return Payload(self._signed.fields())
        if header.stage == STAGE_DECRYPT:
            field = "he.request" if "he.request" in task.payload else "he.aggregate"
            data = task.payload.get_bytes(field, max_size=MAX_ENVELOPE_BYTES)
            release = self.decrypt(data, round=header.round, attempt=header.attempt)
            return Payload({"he.release": release})
        raise PolicyRefused(f"stage {header.stage!r} is not a key-holder stage")

    def decrypt(self, data: bytes, *, round: int, attempt: int = 1) -> bytes:
        """Assemble and decrypt this job's ``round``; return the release bytes.

        Raises:
            PolicyRefused: naming why the key holder refuses (see the module steps).
        """
        import he

        with self._lock:
            seen = len(self._holder.refusals)
            try:
                request = he.DecryptionRequest.from_bytes(data, max_bytes=MAX_ENVELOPE_BYTES)
                self._check_binding(request, round, attempt)
                release = self._holder.decrypt(request)
            except (he.HeError, PolicyRefused) as exc:
                reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, he.HeError) else str(exc)
                self._record(seen, round, attempt, reason)
                log.warning("key holder refuses round %d attempt %d: %s", round, attempt, reason)
                raise PolicyRefused(f"key holder refuses: {reason}") from exc
            self._record(seen, round, attempt, None)
            out = release.to_bytes()
            self.record(
                "decryption",
                direction="local",
                round=round,
                stage=STAGE_DECRYPT,
                detail={
                    "contributors": list(release.contributors),
                    "k": self.min_contributors,
                },
            )
        log.info("released round %d of job %s for %s", round, request.job_id, release.contributors)
        return out

    def _record(self, seen: int, round: int, attempt: int, reason: str | None) -> None:
        """Keep the library's new refusals (left-out contributions) and this one, if any."""
        import he

        new = self._holder.refusals[seen:]
        for r in new:
            if r.owner is not None:
                self._refusals.append(r)
                log.warning("key holder leaves out %s: %s", r.owner, r.reason)
        if reason is not None:
            job = self.job.job.name
            self._refusals.append(he.Refusal(job, round, attempt, None, reason))

    def _check_binding(self, request: he.DecryptionRequest, round: int, attempt: int) -> None:
        import he

        if (request.job_id, request.round, request.attempt) != (self.job.job.name, round, attempt):
            raise PolicyRefused(
                f"the request is for job {request.job_id!r} round {request.round} attempt "
                f"{request.attempt}, the task for job {self.job.job.name!r} round {round} "
                f"attempt {attempt}"
            )
        spec = request.spec
        if self.job.job.kind == "stats":
            ok = isinstance(spec, he.StatsSpec) and spec.digest == self._spec_digest
        else:
            length = spec.length if isinstance(spec, he.VectorSpec) else 1
            ok = isinstance(spec, he.VectorSpec) and spec == vector_spec(self.job, length=length)
        if not ok:
            raise PolicyRefused("the request's spec is not this job's")


def max_decryptions(job: JobConfig) -> int:
    """N_d: how many sums the job's keys may decrypt (``he.max_decryptions``, or one a round)."""
    return job.he.max_decryptions or job.job.rounds


# --- simulations: identities, enrolment and trust made on one machine -------------------------


@dataclass(frozen=True, slots=True)
class SimulatedFiles:
    """Files for participant processes of a simulation (identities are PEM, mode 0600)."""

    enrolment: Path
    keyholder_identity: Path
    owner_identities: dict[str, Path]
    owner_policy: Path


@dataclass(frozen=True, slots=True)
class SimulatedKeys:
    """Identity keys of simulated owners and of their key holder."""

    owners: dict[str, Ed25519PrivateKey]
    keyholder: Ed25519PrivateKey

    @classmethod
    def generate(cls, names: Sequence[str]) -> SimulatedKeys:
        """Fresh keys (OS CSPRNG) for every owner name and for the key holder."""
        return cls({n: Ed25519PrivateKey.generate() for n in names}, Ed25519PrivateKey.generate())

    def enrolment(self) -> dict[str, bytes]:
        """Owner name -> raw public key: what the key holder is given."""
        return {name: raw_public_key(key) for name, key in self.owners.items()}

    def owner_policy(self, base: OwnerPolicy | None = None) -> OwnerPolicy:
        """``base`` (or the default policy) trusting exactly this key holder and these peers."""
        from dataclasses import replace

        trusted = (raw_public_key(self.keyholder).hex(),)
        return replace(
            base or OwnerPolicy(), trusted_keyholders=trusted, peer_keys=self.peer_keys()
        )

    def peer_keys(self) -> tuple[str, ...]:
        """``policy.peer_keys`` entries pinning every simulated owner's identity."""
        return tuple(f"{n}={raw_public_key(k).hex()}" for n, k in sorted(self.owners.items()))

    def keyholder_participant(
        self,
        job: JobConfig,
        *,
        min_contributors: int | None = None,
        options: ClientOptions | None = None,
        audit: AuditLog | None = None,
    ) -> KeyholderParticipant:
        """The in-process key holder of a simulation."""
        return KeyholderParticipant(
            job=job,
            enrolment=self.enrolment(),
            identity_key=self.keyholder,
            min_contributors=min_contributors,
            options=options,
            audit=audit,
        )

    def write(self, folder: Path) -> SimulatedFiles:
        """Write identities, the enrolment and an owner policy file into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        owners = {n: _write_key(folder / f"{n}.pem", key) for n, key in self.owners.items()}
        enrolment = folder / "enrolment.toml"
        enrolment.write_text(enrolment_toml(self.enrolment()))
        policy = folder / "owner-policy.toml"
        peers = ", ".join(f'"{entry}"' for entry in self.peer_keys())
        policy.write_text(
            f'[policy]\ntrusted_keyholders = ["{raw_public_key(self.keyholder).hex()}"]\n'
            f"peer_keys = [{peers}]\n"
        )
        return SimulatedFiles(
            enrolment=enrolment,
            keyholder_identity=_write_key(folder / "keyholder.pem", self.keyholder),
            owner_identities=owners,
            owner_policy=policy,
        )


def _write_key(path: Path, key: Ed25519PrivateKey) -> Path:
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return path
