"""Encrypted model aggregation: owners encrypt, the coordinator adds, the key holder decrypts.

Stages (``he.<stage>``):

1. ``he.context`` (to the key holder): its public context, signed for this job;
2. ``he.contribute`` (to the cohort): the task carries the global model, the training
   instructions and the signed context; the owner checks the context
   (:meth:`fl_core.he_job.SignedContext.open`), trains, clips every coordinate to ``he.clip`` and
   sends ``he.encrypt_vector([w * update, w])`` (w = min(examples, he.max_weight): FedAvg's
   weighting with examples capped), signed with its identity key;
3. the coordinator checks each contribution's receipt and ciphertexts as it arrives
   (:class:`he.Aggregator`, public key only) and keeps the accepted envelopes unchanged;
4. ``he.decrypt`` (to the key holder): the owners' contributions in (``he.request``, a
   :class:`he.DecryptionRequest`), which the key holder checks again, adds itself and decrypts
   only if at least k enrolled owners' contributions verify; a flooded, rounded release of the
   sums out; the mean update is sum / sum of w.

Threat model: a malicious coordinator that never holds the secret key and whose own ciphertexts
are never decrypted, and a key holder that is not the coordinator and decrypts only sums it
assembled from at least k signed contributions, once per round (``he/README.md`` says who must
not collude with whom). Unlike secure aggregation, a dropped owner costs nothing: there are no
masks to remove.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from ..client.training import owner_fit
from ..config import JobConfig
from ..errors import CodecError, PolicyRefused, RoundAborted
from ..he_job import (
    MAX_ENVELOPE_BYTES,
    STAGE_KEYS,
    SignedContext,
    advertisement_fields,
    advertisement_from_payload,
    check_release_against,
    cohort_fields,
    map_he_errors,
    masked,
    owner_masking,
    owner_min_contributors,
    raw_public_key,
    reject_he_errors,
    trusted_keyholders,
    vector_spec,
)
from ..payload import Payload
from .base import AggregateUpdate, RoundContext, fit_to_fields, model_hash
from .mean import quorum_of

if TYPE_CHECKING:
    import he

STAGE_CONTEXT = "he.context"
STAGE_CONTRIBUTE = "he.contribute"
STAGE_DECRYPT = "he.decrypt"
STAGES = (STAGE_CONTEXT, STAGE_CONTRIBUTE, STAGE_DECRYPT)
MASKED_STAGES = (STAGE_CONTEXT, STAGE_KEYS, STAGE_CONTRIBUTE, STAGE_DECRYPT)
MIN_OWNERS = 2


class HESumServerRound:
    """Coordinator side of one HE-aggregated round attempt (public key only)."""

    stages: tuple[str, ...] = STAGES

    def __init__(self, ctx: RoundContext, job: JobConfig, *, quorum_fraction: float) -> None:
        if ctx.keyholder is None:
            raise RoundAborted(stage=STAGE_CONTEXT, reason="no key holder is live")
        self._ctx = ctx
        self._job = job
        self.stages = MASKED_STAGES if masked(job) else STAGES
        self._masking: he.Cohort | None = None
        self._keyholder = ctx.keyholder
        self._quorum_fraction = quorum_fraction
        self._dim = int(ctx.global_weights.shape[0])
        self._spec = vector_spec(job, length=self._dim + 1)
        self._cohort = tuple(sorted(ctx.cohort))
        self._signed: SignedContext | None = None
        self._aggregator: he.Aggregator | None = None
        self._request: he.DecryptionRequest | None = None
        self._release: he.Release | None = None
        self._fingerprint = ""

    def tasks(self, stage: str, alive: Sequence[str]) -> dict[str, Payload]:
        """The key holder's task, or one per owner still in the round.

        ``alive`` is not used: after a key-holder stage it holds only the key holder.
        """
        if stage == STAGE_CONTEXT:
            return {self._keyholder: Payload({"he.job_sha256": self._job.sha256})}
        if stage == STAGE_KEYS:
            return {client: Payload({"he.job_sha256": self._job.sha256}) for client in self._cohort}
        if stage == STAGE_CONTRIBUTE:
            if self._signed is None:
                raise RoundAborted(stage=stage, reason="no public context")
            masking = (
                cohort_fields(self._masking, self._ctx.identities)
                if self._masking is not None
                else {}
            )
            task = Payload(
                {
                    "weights": self._ctx.global_weights,
                    **fit_to_fields(self._ctx.fit),
                    **self._signed.fields(),
                    **masking,
                }
            )
            return {client: task for client in self._cohort}
        if self._request is None:
            raise RoundAborted(stage=stage, reason="no contributions to decrypt")
        return {self._keyholder: Payload({"he.request": self._request.to_bytes()})}

    def quorum(self, stage: str, sent: int) -> int:
        """One key holder; the job's quorum of the cohort, at least two owners.

        Masked, every owner of the cohort must contribute (the masks cancel only over all of
        them): below that the attempt aborts and restarts with fresh keys and the survivors.
        """
        if stage == STAGE_KEYS:
            return quorum_of(sent, self._quorum_fraction, MIN_OWNERS)
        if stage == STAGE_CONTRIBUTE:
            if self._masking is not None:
                return sent
            return quorum_of(sent, self._quorum_fraction, MIN_OWNERS)
        return 1

    def check(self, stage: str, client_id: str, payload: Payload) -> object:
        """Check the signed context, add a contribution, or check a release."""
        import he

        if stage == STAGE_KEYS:
            if client_id not in self._cohort:
                raise CodecError(f"client {client_id!r} is not in this round's cohort")
            return advertisement_from_payload(payload, client_id)
        if stage == STAGE_CONTRIBUTE:
            if client_id not in self._cohort or self._aggregator is None:
                raise CodecError(f"client {client_id!r} is not in this round's cohort")
            blob = payload.get_bytes("he.contribution", max_size=MAX_ENVELOPE_BYTES)
            with reject_he_errors(f"contribution of {client_id!r}"):
                receipt = self._aggregator.add(blob)
            if receipt.owner_id != client_id:
                raise CodecError(
                    f"{client_id!r} sent a contribution signed as {receipt.owner_id!r}"
                )
            return receipt
        if client_id != self._keyholder:
            raise CodecError(f"{client_id!r} is not this round's key holder")
        if stage == STAGE_CONTEXT:
            signed = SignedContext.from_payload(payload)
            try:
                public = signed.open(self._job)
            except Exception as exc:  # noqa: BLE001 - any refusal rejects the result
                raise CodecError(str(exc)) from exc
            return signed, public
        data = payload.get_bytes("he.release", max_size=MAX_ENVELOPE_BYTES)
        with reject_he_errors("release"):
            release = he.Release.from_bytes(data)
        check_release_against(release, self._request, self._aggregator)
        if not isinstance(release.spec, he.VectorSpec) or release.spec != self._spec:
            raise CodecError("the release holds another spec than this round's")
        return release

    def collect(self, stage: str, results: Mapping[str, object], dropped: Sequence[str]) -> None:
        """Keep the context, close the sum, or keep the release."""
        import he

        if stage == STAGE_CONTEXT:
            value: tuple[SignedContext, he.PublicContext] = results[self._keyholder]  # type: ignore[assignment]
            self._signed, public = value
            self._fingerprint = public.fingerprint
            identities = {c: self._ctx.identities.get(c, b"") for c in self._cohort}
            with _aborting(stage):
                self._aggregator = he.Aggregator(
                    public,
                    spec=self._spec,
                    job_id=self._ctx.job_id,
                    round=self._ctx.round,
                    enrolment=identities,
                    attempt=self._ctx.attempt,
                )
        elif stage == STAGE_KEYS:
            self._cohort = tuple(sorted(results))
            self._masking = he.Cohort(
                job_id=self._ctx.job_id,
                round=self._ctx.round,
                attempt=self._ctx.attempt,
                advertisements=tuple(results[c] for c in self._cohort),  # type: ignore[misc]
            )
        elif stage == STAGE_CONTRIBUTE:
            if self._masking is not None and set(results) != set(self._cohort):
                missing = sorted(set(self._cohort) - set(results))
                raise RoundAborted(
                    stage=stage,
                    reason=f"masked cohort incomplete, missing {missing}: restart with fresh keys",
                )
            self._cohort = tuple(sorted(results))
            if self._aggregator is None:
                raise RoundAborted(stage=stage, reason="no aggregator")
            with _aborting(stage):
                self._request = self._aggregator.request(cohort=self._masking)
        else:
            self._release = results[self._keyholder]  # type: ignore[assignment]

    def finish(self) -> AggregateUpdate:
        """The mean update: the released sum of w * update over the released sum of w."""
        if self._release is None:
            raise RoundAborted(stage=STAGE_DECRYPT, reason="the key holder released nothing")
        total = self._release.vector()
        tolerance = float(self._release.tolerances().max())
        weight = float(total[-1])
        if not weight > tolerance:
            raise RoundAborted(stage=STAGE_DECRYPT, reason=f"the summed weight is {weight}")
        return AggregateUpdate(
            mean_update=(total[:-1] / weight).astype(np.float32),
            contributors=tuple(sorted(self._release.contributors)),
            total_weight=weight,
            details={
                "he_tolerance": tolerance,
                "he_flood_bits": self._release.flood_bits,
                "he_fingerprint": self._fingerprint,
            },
        )


@contextmanager
def _aborting(stage: str) -> Iterator[None]:
    """Turn an he error met while closing a stage into RoundAborted for that stage."""
    import he

    try:
        yield
    except he.HeError as exc:
        raise RoundAborted(stage=stage, reason=f"{type(exc).__name__}: {exc}") from exc


class HESumAggregator:
    """Makes an :class:`HESumServerRound` per round attempt; rounds wait for a key holder."""

    name = "he"
    needs_keyholder = True

    def __init__(self, job: JobConfig) -> None:
        self.job = job

    def server_round(self, ctx: RoundContext) -> HESumServerRound:
        """A fresh round: new aggregator, new request to the key holder."""
        return HESumServerRound(ctx, self.job, quorum_fraction=self.job.round.quorum_fraction)


class HESumClientRound:
    """Data-owner side of one round attempt: check the context, train, encrypt, sign."""

    def __init__(self, ctx: Any, *, round: int, attempt: int = 1) -> None:
        self._ctx = ctx
        self._round, self._attempt = round, attempt
        self._mask_key: he.MaskingKey | None = None

    def handle(self, stage: str, payload: Payload) -> Payload:
        """Answer ``he.keys`` and ``he.contribute``; a failed check refuses with its reason."""
        import he

        ctx = self._ctx
        job: JobConfig = ctx.job
        if stage == STAGE_KEYS:
            if not masked(job):
                raise PolicyRefused("this job does not mask contributions (he.masking)")
            if self._mask_key is not None:
                raise PolicyRefused("a second he.keys task in one attempt")
            self._mask_key, advertisement = he.MaskingKey.generate(
                identity_key=ctx.identity_key,
                owner_id=ctx.client_id,
                job_id=job.job.name,
                round=self._round,
                attempt=self._attempt,
            )
            return Payload(advertisement_fields(advertisement))
        if stage != STAGE_CONTRIBUTE:
            raise CodecError(f"stage {stage!r} is not an owner's stage of an HE round")
        k = owner_min_contributors(job, ctx.policy)
        dim = ctx.layout.total
        weights = payload.get_tensor("weights", dtype="float32", shape=(dim,), finite=True)
        fit = owner_fit(self._ctx.job, payload, round=self._round)
        public = SignedContext.from_payload(payload).open(
            job, trusted=trusted_keyholders(job, ctx.policy)
        )
        masking = owner_masking(
            job, ctx.policy, payload, self._mask_key, k=k,
            own_identity=raw_public_key(ctx.identity_key),
            roster_owners=ctx.roster.keys("owner") if ctx.roster is not None else None,
        )  # fmt: skip
        ctx.releases.release(  # counted first; without DP once per round and per model
            round=self._round,
            attempt=self._attempt,
            model_hash=model_hash(np.asarray(weights)),
            once=ctx.privacy is None,
        )
        update, examples, _ = ctx.local_update(np.asarray(weights), fit)
        clip = job.he.clip
        weight = float(min(examples, job.he.max_weight))
        vector = np.empty(dim + 1, dtype=np.float64)
        vector[:-1] = np.clip(update, -clip, clip)
        vector[:-1] *= weight
        vector[-1] = weight
        with map_he_errors("encrypting the update"):
            blob = he.encrypt_vector(
                public,
                vector,
                spec=vector_spec(job, length=dim + 1),
                job_id=job.job.name,
                round=self._round,
                owner_id=ctx.client_id,
                signing_key=ctx.identity_key,
                min_contributors=k,
                attempt=self._attempt,
                masking=masking,
            )
        return Payload({"he.contribution": blob})
