"""The job loop of a statistics job (``job.kind = "stats"``): a runner for the Coordinator.

One round, tried up to ``round.max_attempts`` times:

1. wait for a key holder and for ``sampling.min_clients`` owners; sample the cohort;
2. ``he.context`` (to the key holder): its public context, signed for this job; the coordinator
   checks signature, signer (the identity the key holder joined with) and parameters;
3. ``he.keys`` (to the owners, when the job masks, ``he.masking``): each owner's masking
   public key, signed with its identity key; the answers are the attempt's cohort;
   ``he.contribute`` (to the owners): the signed context in, encrypted sufficient statistics
   out; each contribution is checked (receipt, binding, ciphertexts) and added as it arrives
   (:class:`he.Aggregator`: the coordinator holds the public context only and cannot decrypt);
4. ``he.decrypt`` (to the key holder): the accepted contributions in, unchanged
   (``he.request``); the key holder checks each again, adds them itself and returns a release,
   or its refusal (fewer than k enrolled owners, ...), which aborts the attempt with that
   reason. The coordinator's own encrypted sum is never decrypted;
5. finalize (mean, variance, quantiles, covariance, OLS, ...) and commit the result as the
   round's metrics, in the same transaction that completes the round.

The coordinator relays the contributions of at least the owners' own k; the job's k (and a higher
one the key holder may set) is enforced by the key holder, which is the party that must refuse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CodecError, FlCoreError, RoundAborted
from ..he_job import (
    MAX_ENVELOPE_BYTES,
    STAGE_KEYS,
    SignedContext,
    advertisement_from_payload,
    check_release_against,
    cohort_fields,
    masked,
    reject_he_errors,
)
from ..payload import Payload
from ..transport.base import JobDone
from .driver import StageOutcome
from .events import Event
from .rounds import DONE_GRACE_S, start_attempt

if TYPE_CHECKING:
    import he

    from .service import Coordinator

log = logging.getLogger("bulwark.coordinator")

STAGE_CONTEXT = "he.context"
STAGE_CONTRIBUTE = "he.contribute"
STAGE_DECRYPT = "he.decrypt"
ROUND = 1
NO_WEIGHTS = np.zeros(0, dtype=np.float32)


class StatsJob:
    """Runs a statistics job on a :class:`~fl_core.coordinator.service.Coordinator`.

    Pass an instance as the coordinator's ``runner``. After a run, ``public`` holds the public
    context the coordinator worked with (it has no secret key), ``aggregate`` the last encrypted
    sum it built, and ``result`` the statistics (JSON-able), or None if the job failed.
    """

    def __init__(self) -> None:
        self.public: he.PublicContext | None = None
        self.aggregate: he.EncryptedAggregate | None = None
        self.result: dict[str, Any] | None = None

    async def __call__(self, c: Coordinator) -> JobDone:
        """Resume or run the job; return how it ended."""
        resume = c.store.open_job(c.job_id, config=c.job.source, initial_weights=NO_WEIGHTS)
        c.completed_round = resume.completed_round
        if resume.completed_round >= ROUND:
            self.result = statistics_of(c.store.metrics(c.job_id))
            done = JobDone("completed")
        else:
            try:
                await self._run_round(c)
                done = JobDone("completed")
            except FlCoreError as exc:
                log.error("job %s failed: %s", c.job_id, exc)
                done = JobDone("failed", str(exc))
        c.store.finish_job(c.job_id, status=done.status, reason=done.reason)
        c.record(
            "job_done",
            direction="local",
            round=c.completed_round,
            reason=done.reason,
            detail={"status": done.status, "rounds": c.completed_round},
        )
        c.finish(done)
        c.emit(Event("job_done", c.completed_round, {"status": done.status, "reason": done.reason}))
        await c.wait_clients_notified(DONE_GRACE_S)
        return done

    async def _run_round(self, c: Coordinator) -> None:

        last: RoundAborted | None = None
        for _ in range(c.job.round.max_attempts):
            attempt = c.store.next_attempt(c.job_id, ROUND)
            try:
                await self._attempt(c, attempt)
                return
            except RoundAborted as exc:
                last = exc
                log.warning("statistics attempt %d aborted: %s", attempt, exc)
                c.store.abort_attempt(c.job_id, ROUND, attempt, stage=exc.stage, reason=exc.reason)
                c.store.log_event(c.job_id, kind="round_aborted", round=ROUND, detail=str(exc))
                c.record(
                    "round_aborted",
                    direction="local",
                    round=ROUND,
                    stage=exc.stage,
                    reason=exc.reason,
                    detail={"attempt": attempt},
                )
                c.emit(Event("round_aborted", ROUND, {"attempt": attempt, "reason": str(exc)}))
        raise FlCoreError(
            f"the statistics round aborted {c.job.round.max_attempts} time(s); last: {last}"
        )

    async def _attempt(self, c: Coordinator, attempt: int) -> None:
        import he

        job = c.job
        if job.stats is None:
            raise FlCoreError("a statistics job needs a [stats] table")
        spec = job.stats.spec()
        waited = time.perf_counter()
        wait_s = job.sampling.wait_for_clients_s
        keyholder = (await c.wait_for_clients(1, wait_s, role="keyholder"))[0]
        live = await c.wait_for_clients(job.sampling.min_clients, wait_s)
        started = time.perf_counter()
        down0, up0 = c.traffic.down, c.traffic.up
        cohort = start_attempt(c, ROUND, attempt, live)
        stages = _Stages(c, attempt)

        registered = c.registry.identity_keys("keyholder").get(keyholder, b"")

        def check_context(stage: str, client: str, payload: Payload) -> object:
            signed = SignedContext.from_payload(payload)
            if client != keyholder or signed.key != registered:
                raise CodecError("the public context is not signed by the joined key holder")
            try:
                return signed, signed.open(job)
            except FlCoreError as exc:
                raise CodecError(str(exc)) from exc

        out = await stages.run(
            STAGE_CONTEXT, {keyholder: Payload({"he.job_sha256": job.sha256})}, check_context
        )
        opened: tuple[SignedContext, he.PublicContext] = out.results[keyholder]  # type: ignore[assignment]
        signed, public = opened
        self.public = public
        keys = c.registry.identity_keys()
        enrolment = {cid: keys[cid] for cid in cohort if cid in keys}
        try:
            aggregator = he.Aggregator(
                public,
                spec=spec,
                job_id=c.job_id,
                round=ROUND,
                enrolment=enrolment,
                attempt=attempt,
            )
        except he.HeError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise RoundAborted(stage=STAGE_CONTRIBUTE, reason=reason) from exc

        def check_contribution(stage: str, client: str, payload: Payload) -> object:
            blob = payload.get_bytes("he.contribution", max_size=MAX_ENVELOPE_BYTES)
            with reject_he_errors(f"contribution of {client!r}"):
                receipt = aggregator.add(blob)
            if receipt.owner_id != client:
                raise CodecError(f"{client!r} sent a contribution signed as {receipt.owner_id!r}")
            return receipt

        masking: he.Cohort | None = None
        extra: dict[str, object] = {}
        if masked(job):  # owners advertise masking keys; every one of them must contribute

            def check_keys(stage: str, client: str, payload: Payload) -> object:
                return advertisement_from_payload(payload, client)

            keys_task = Payload({"he.job_sha256": job.sha256})
            out = await stages.run(STAGE_KEYS, {cid: keys_task for cid in cohort}, check_keys)
            cohort = sorted(out.results)
            masking = he.Cohort(
                job_id=c.job_id,
                round=ROUND,
                attempt=attempt,
                advertisements=tuple(out.results[cid] for cid in cohort),  # type: ignore[misc]
            )
            extra = cohort_fields(masking, keys)
        task = Payload({**signed.fields(), **extra})
        out = await stages.run(
            STAGE_CONTRIBUTE,
            {cid: task for cid in cohort},
            check_contribution,
            quorum=len(cohort) if masking is not None else 1,
        )
        if masking is not None and set(out.results) != set(cohort):
            missing = sorted(set(cohort) - set(out.results))
            raise RoundAborted(
                stage=STAGE_CONTRIBUTE,
                reason=f"masked cohort incomplete, missing {missing}: restart with fresh keys",
            )
        try:
            request = aggregator.request(cohort=masking)
            self.aggregate = aggregator.result()  # the coordinator's own sum: never decrypted
        except he.HeError as exc:
            raise RoundAborted(
                stage=STAGE_CONTRIBUTE, reason=f"{type(exc).__name__}: {exc}"
            ) from exc

        def check_release(stage: str, client: str, payload: Payload) -> object:
            data = payload.get_bytes("he.release", max_size=MAX_ENVELOPE_BYTES)
            with reject_he_errors("release"):
                release = he.Release.from_bytes(data)
            check_release_against(release, request, aggregator)
            if not isinstance(release.spec, he.StatsSpec) or release.spec.digest != spec.digest:
                raise CodecError("the release holds another spec than this job's")
            return release

        task = Payload({"he.request": request.to_bytes()})
        out = await stages.run(STAGE_DECRYPT, {keyholder: task}, check_release)
        release: he.Release = out.results[keyholder]  # type: ignore[assignment]
        result = he.finalize_statistics(release).to_dict()
        metrics: dict[str, object] = {
            "round": ROUND,
            "attempt": attempt,
            "clients": sorted(release.contributors),
            "num_clients": len(release.contributors),
            "cohort": len(cohort),
            "dropped": stages.dropped,
            "refusals": stages.refusals,
            "context_fingerprint": public.fingerprint,
            "flood_bits": release.flood_bits,
            "statistics": result,
            "bytes_down": c.traffic.down - down0,
            "bytes_up": c.traffic.up - up0,
            "stage_seconds": stages.seconds,
            "seconds": round(time.perf_counter() - started, 6),
            "wait_seconds": round(started - waited, 6),
        }
        c.store.commit_round(
            c.job_id, ROUND, attempt, weights=NO_WEIGHTS, strategy_state={}, metrics=metrics
        )
        c.record(
            "round_committed",
            direction="local",
            round=ROUND,
            detail={
                "attempt": attempt,
                "contributors": sorted(release.contributors),
                "num_clients": len(release.contributors),
                "flood_bits": release.flood_bits,
            },
        )
        self.result = result
        c.completed_round = ROUND
        c.emit(Event("round_completed", ROUND, metrics))


class _Stages:
    """Runs the stages of one attempt and records them (store, events, drop-outs, refusals)."""

    def __init__(self, c: Coordinator, attempt: int) -> None:
        self.c = c
        self.attempt = attempt
        self.dropped: dict[str, list[str]] = {}
        self.refusals: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    async def run(
        self,
        stage: str,
        tasks: Mapping[str, Payload],
        check: Callable[[str, str, Payload], object],
        quorum: int = 1,
    ) -> StageOutcome:

        c = self.c
        c.record(
            "tasks",
            direction="sent",
            round=ROUND,
            stage=stage,
            detail={"attempt": self.attempt, "to": sorted(tasks)},
        )

        def progress(name: str, answered: int, sent: int) -> None:
            c.emit(
                Event("stage_progress", ROUND, {"stage": name, "answered": answered, "sent": sent})
            )

        outcome = await c.driver.run_stage(
            job_id=c.job_id,
            round=ROUND,
            attempt=self.attempt,
            stage=stage,
            tasks=tasks,
            check=check,
            quorum=quorum,
            timeout=c.job.round.stage_timeout_s,
            progress=progress,
        )
        c.record(
            "results",
            direction="received",
            round=ROUND,
            stage=stage,
            detail={
                "attempt": self.attempt,
                "from": sorted(outcome.results),
                "dropped": list(outcome.dropped),
            },
        )
        c.store.stage_done(
            c.job_id,
            ROUND,
            self.attempt,
            stage,
            sent=outcome.sent,
            answered=len(outcome.results),
            dropped=list(outcome.dropped),
            seconds=outcome.seconds,
        )
        if outcome.dropped:
            self.dropped[stage] = list(outcome.dropped)
        for client, refusal in outcome.refused.items():
            self.refusals[client] = f"{stage}: {refusal.code}: {refusal.reason}"
        self.seconds[stage] = round(outcome.seconds, 6)
        return outcome


def statistics_of(metrics: list[dict[str, object]]) -> dict[str, Any] | None:
    """The statistics a completed statistics job stored (None if none)."""
    for row in metrics:
        value = row.get("statistics")
        if isinstance(value, dict):
            return value
    return None


async def run_stats_job(c: Coordinator) -> JobDone:
    """Run ``c``'s statistics job (a ``runner`` for the Coordinator)."""
    return await StatsJob()(c)
