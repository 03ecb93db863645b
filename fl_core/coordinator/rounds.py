"""One job, round by round: resume, sample a cohort, run the aggregator's stages, apply, commit.

A round attempt:

1. wait until ``sampling.min_clients`` clients are live, then sample the cohort;
2. for each stage the aggregator names, hand out its tasks through the stage driver and collect
   the results (the cohort only shrinks from stage to stage);
3. turn the aggregate update into the next global model with the strategy;
4. evaluate the new model on a sample of clients, when due;
5. commit checkpoint, strategy state and metrics in one transaction.

An aborted attempt is recorded with its stage and reason and the round is tried again, as a new
attempt (fresh keys and masks), up to ``round.max_attempts`` times; then the job fails.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..aggregators.base import AggregateUpdate, RoundContext
from ..aggregators.evaluation import STAGE_EVALUATE, EvaluateServerRound
from ..client.training import job_fit
from ..codec import all_finite
from ..errors import FlCoreError, RoundAborted
from ..transport.base import JobDone
from .events import Event
from .registry import sample_cohort

if TYPE_CHECKING:
    from .service import Coordinator

log = logging.getLogger("bulwark.coordinator")

DONE_GRACE_S = 10.0
"""How long a finished coordinator waits for its clients to learn that the job ended."""


def round_rng(seed: int | None, round: int, attempt: int, purpose: int) -> np.random.Generator:
    """The generator for one round attempt's sampling.

    Seeded from the job's seed for reproducible simulations; from the OS CSPRNG otherwise.
    """
    if seed is None:
        return np.random.default_rng(secrets.randbits(128))
    return np.random.default_rng([seed, round, attempt, purpose])


async def run_job(c: Coordinator) -> JobDone:
    """Resume ``c``'s job from its store and run the remaining rounds."""
    job = c.job
    resume = c.store.open_job(c.job_id, config=job.source, initial_weights=c.initial_weights)
    c.global_weights = resume.weights
    c.strategy.load_state(resume.strategy_state)
    c.completed_round = resume.completed_round
    if resume.completed_round:
        log.info("resuming job %s after round %d", c.job_id, resume.completed_round)
        c.emit(Event("resumed", resume.completed_round))
    try:
        for rnd in range(resume.completed_round + 1, job.job.rounds + 1):
            await _run_round(c, rnd)
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


async def _run_round(c: Coordinator, rnd: int) -> None:

    last: RoundAborted | None = None
    for _ in range(c.job.round.max_attempts):
        attempt = c.store.next_attempt(c.job_id, rnd)
        try:
            await _run_attempt(c, rnd, attempt)
            return
        except RoundAborted as exc:
            last = exc
            log.warning("round %d attempt %d aborted: %s", rnd, attempt, exc)
            c.store.abort_attempt(c.job_id, rnd, attempt, stage=exc.stage, reason=exc.reason)
            c.store.log_event(c.job_id, kind="round_aborted", round=rnd, detail=str(exc))
            c.record(
                "round_aborted",
                direction="local",
                round=rnd,
                stage=exc.stage,
                reason=exc.reason,
                detail={"attempt": attempt},
            )
            c.emit(Event("round_aborted", rnd, {"attempt": attempt, "reason": str(exc)}))
    raise FlCoreError(
        f"round {rnd} aborted {c.job.round.max_attempts} times in a row; last: {last}"
    )


def start_attempt(c: Coordinator, rnd: int, attempt: int, live: list[str]) -> list[str]:
    """Sample, record and announce an attempt's cohort of live clients.

    The sampling is seeded by the job's seed, the round and the attempt.

    Raises:
        RoundAborted: Poisson sampling chose no client.
    """
    sampling = c.job.sampling
    cohort = sample_cohort(
        live,
        fraction=sampling.fraction,
        min_clients=sampling.min_clients,
        poisson=sampling.poisson,
        rng=round_rng(c.job.job.seed, rnd, attempt, 0),
    )
    c.store.start_attempt(c.job_id, rnd, attempt, cohort)
    if not cohort:
        raise RoundAborted(stage="sampling", reason="Poisson sampling chose no client")
    c.emit(Event("round_started", rnd, {"attempt": attempt, "cohort": len(cohort)}))
    c.record(
        "round_started", direction="local", round=rnd, detail={"attempt": attempt, "cohort": cohort}
    )
    return cohort


async def _run_attempt(c: Coordinator, rnd: int, attempt: int) -> None:

    job = c.job
    waited = time.perf_counter()
    live = await c.wait_for_clients(job.sampling.min_clients, job.sampling.wait_for_clients_s)
    started = time.perf_counter()
    down0, up0 = c.traffic.down, c.traffic.up
    cohort = start_attempt(c, rnd, attempt, live)
    seed = job.job.seed if job.job.seed is not None else secrets.randbits(62)
    # The same settings every owner computes from its own job file (it refuses any other).
    fit = job_fit(job, rnd, seed=int(np.random.default_rng([seed, rnd]).integers(0, 2**62)))
    if getattr(c.aggregator, "needs_keyholder", False):
        await c.wait_for_clients(1, job.sampling.wait_for_clients_s, role="keyholder")
    identities = c.registry.identity_keys()
    ctx = RoundContext(
        job_id=c.job_id,
        round=rnd,
        attempt=attempt,
        global_weights=c.global_weights,
        fit=fit,
        cohort=tuple(cohort),
        identities={cid: identities.get(cid, b"") for cid in cohort},
        keyholder=next(iter(c.registry.live("keyholder")), None),
        rng=round_rng(job.job.seed, rnd, attempt, 1),
    )
    server = c.aggregator.server_round(ctx)
    alive = list(cohort)
    dropped: dict[str, list[str]] = {}
    stage_seconds: dict[str, float] = {}

    def progress(stage: str, answered: int, sent: int) -> None:
        c.emit(Event("stage_progress", rnd, {"stage": stage, "answered": answered, "sent": sent}))

    for stage in server.stages:
        tasks = server.tasks(stage, alive)
        c.record(
            "tasks",
            direction="sent",
            round=rnd,
            stage=stage,
            detail={"attempt": attempt, "to": sorted(tasks)},
        )
        outcome = await c.driver.run_stage(
            job_id=c.job_id,
            round=rnd,
            attempt=attempt,
            stage=stage,
            tasks=tasks,
            check=server.check,
            quorum=server.quorum(stage, len(tasks)),
            timeout=job.round.stage_timeout_s,
            progress=progress,
        )
        c.record(
            "results",
            direction="received",
            round=rnd,
            stage=stage,
            detail={
                "attempt": attempt,
                "from": sorted(outcome.results),
                "dropped": list(outcome.dropped),
            },
        )
        server.collect(stage, outcome.results, outcome.dropped)
        c.store.stage_done(
            c.job_id,
            rnd,
            attempt,
            stage,
            sent=outcome.sent,
            answered=len(outcome.results),
            dropped=list(outcome.dropped),
            seconds=outcome.seconds,
        )
        if outcome.dropped:
            dropped[stage] = list(outcome.dropped)
        stage_seconds[stage] = round(outcome.seconds, 6)
        alive = sorted(outcome.results)
    aggregate = server.finish()
    new_weights = c.strategy.apply(c.global_weights, aggregate.mean_update)
    if not all_finite(new_weights):
        raise RoundAborted(stage="apply", reason="the new global model has NaN or Inf entries")
    metrics: dict[str, object] = {
        "round": rnd,
        "attempt": attempt,
        "clients": list(aggregate.contributors),
        "num_clients": len(aggregate.contributors),
        "cohort": len(cohort),
        "dropped": dropped,
        "total_weight": aggregate.total_weight,
        **{f"train_{k}": v for k, v in aggregate.metrics.items() if k not in _PER_OWNER},
        **{k: v for k, v in aggregate.details.items() if isinstance(v, int | float | str)},
    }
    metrics.update(_privacy_metrics(c, aggregate))
    metrics.update(await _evaluate(c, rnd, attempt, new_weights))
    metrics["bytes_down"] = c.traffic.down - down0
    metrics["bytes_up"] = c.traffic.up - up0
    metrics["stage_seconds"] = stage_seconds
    metrics["seconds"] = round(time.perf_counter() - started, 6)
    metrics["wait_seconds"] = round(started - waited, 6)
    c.store.commit_round(
        c.job_id,
        rnd,
        attempt,
        weights=new_weights,
        strategy_state=c.strategy.state(),
        metrics=metrics,
    )
    epsilon = metrics.get("epsilon")
    c.record(
        "round_committed",
        direction="local",
        round=rnd,
        epsilon=float(epsilon) if isinstance(epsilon, int | float) else None,
        detail={
            "attempt": attempt,
            "contributors": list(aggregate.contributors),
            **{k: v for k, v in metrics.items() if k in _AUDITED and isinstance(v, int | float)},
        },
    )
    c.global_weights = new_weights
    c.completed_round = rnd
    c.emit(Event("round_completed", rnd, metrics))


_PER_OWNER = ("epsilon", "dpsgd_epsilon")
_AUDITED = ("accuracy", "loss", "delta", "num_clients", "cohort")
"""Round metrics copied into the coordinator's audit entry of a committed round."""


def _privacy_metrics(c: Coordinator, aggregate: AggregateUpdate) -> dict[str, object]:
    """The round's guarantee (central and distributed modes) and each owner's ledger total."""
    out: dict[str, object] = {}
    owners = {
        cid: float(m["epsilon"])
        for cid, m in sorted(aggregate.client_metrics.items())
        if "epsilon" in m
    }
    if owners:
        out["owner_epsilon"] = owners
    plan = c.dp_plan()
    if plan is not None and plan.mode != "dpsgd":
        history = [int(m.get("dp_survivors", 0)) for m in c.store.metrics(c.job_id)]  # type: ignore[call-overload]
        history.append(len(aggregate.contributors))
        out["epsilon"] = plan.epsilon(history)
        out["delta"] = plan.delta
        out["dp_mode"] = plan.mode
    return out


async def _evaluate(
    c: Coordinator, rnd: int, attempt: int, weights: npt.NDArray[np.float32]
) -> dict[str, object]:
    job = c.job
    every = job.evaluation.every
    if every == 0 or (rnd % every != 0 and rnd != job.job.rounds):
        return {}
    if job.dp.mode != "none":  # owners refuse to answer evaluations their budget does not cover
        if c.central_evaluator is None:
            return {}
        return await asyncio.to_thread(c.central_evaluator, weights)
    live = c.registry.live()
    cohort = sample_cohort(
        live,
        fraction=job.evaluation.fraction,
        min_clients=1,
        poisson=False,
        rng=round_rng(job.job.seed, rnd, attempt, 2),
    )
    if not cohort:
        return {}
    server = EvaluateServerRound(
        weights, round=rnd, quorum_fraction=job.round.quorum_fraction, min_clients=1
    )
    tasks = server.tasks(STAGE_EVALUATE, cohort)
    try:
        outcome = await c.driver.run_stage(
            job_id=c.job_id,
            round=rnd,
            attempt=attempt,
            stage=STAGE_EVALUATE,
            tasks=tasks,
            check=server.check,
            quorum=server.quorum(STAGE_EVALUATE, len(tasks)),
            timeout=job.round.stage_timeout_s,
        )
        server.collect(STAGE_EVALUATE, outcome.results, outcome.dropped)
    except RoundAborted as exc:
        log.warning("evaluation of round %d failed: %s", rnd, exc)
        return {"evaluation_error": str(exc)}
    means, examples, _ = server.finish()
    return {**means, "eval_examples": examples, "eval_clients": len(outcome.results)}
