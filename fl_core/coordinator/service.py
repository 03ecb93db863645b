"""The coordinator: the endpoint that clients call, and the loop that drives the job's rounds.

:class:`Coordinator` implements :class:`~fl_core.transport.base.CoordinatorEndpoint` (join, pull,
push, leave), which any transport serves, and :meth:`Coordinator.run`, which resumes the job from
its store and runs the remaining rounds (:mod:`fl_core.coordinator.rounds`). Every result is
checked against the task that was sent (job, round, attempt, stage, task id, client) and then by
the protocol; a rejected one raises an fl_core error that the transport turns into a status code,
is logged, and changes nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..aggregators.base import Aggregator
from ..audit import MAX_TEXT, AuditLog, job_protections
from ..config import JobConfig
from ..dp.plan import DPPlan, make_plan
from ..errors import CodecError, ConfigError, DuplicateResult, FlCoreError, StaleResult
from ..strategies import Strategy
from ..transport.base import (
    PROTOCOL_VERSION,
    JobDone,
    JoinReply,
    JoinRequest,
    PullReply,
    Result,
    Task,
    Wait,
)
from .driver import StageDriver
from .events import Event, EventSink
from .registry import Accepted, ClientRecord, ClientRegistry, Refused
from .rounds import run_job
from .store import Store

log = logging.getLogger("bulwark.coordinator")


@dataclass(slots=True)
class Traffic:
    """Payload bytes moved, counted where the coordinator hands out tasks and accepts results."""

    down: int = 0
    up: int = 0


class Coordinator:
    """A coordinator for one job.

    Args:
        job: the job configuration.
        store: where the job's state lives.
        initial_weights: the flat float32 model to start from (used only for a new job).
        strategy: the server update rule.
        aggregator: how updates are summed (plain mean, secure aggregation, HE).
        events: receives progress events (optional).
        runner: the job loop (default: training rounds, :func:`fl_core.coordinator.rounds.run_job`).
        clock: wall clock (injectable for tests).
        central_evaluator: DP simulations: scores a global model on pooled test data.
        audit: the coordinator's audit log (tasks sent, results and refusals received, rounds
            committed or aborted; none when omitted).
    """

    def __init__(
        self,
        job: JobConfig,
        *,
        store: Store,
        initial_weights: npt.NDArray[np.float32],
        strategy: Strategy,
        aggregator: Aggregator,
        events: EventSink | None = None,
        runner: Callable[[Coordinator], Awaitable[JobDone]] | None = None,
        clock: Callable[[], float] = time.time,
        central_evaluator: Callable[[npt.NDArray[np.float32]], dict[str, object]] | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.job = job
        self.audit = audit
        self.central_evaluator = central_evaluator
        self.job_id = job.job.name
        self.store = store
        self.strategy = strategy
        self.aggregator = aggregator
        self.registry = ClientRegistry(clock=clock)
        self.driver = StageDriver(self.registry, clock=clock)
        self.traffic = Traffic()
        self.initial_weights = np.ascontiguousarray(initial_weights, dtype=np.float32)
        self._events = events or (lambda event: None)
        self._runner = runner or run_job
        self._clock = clock
        self._done: JobDone | None = None
        self._clients_changed = asyncio.Event()
        self.global_weights = self.initial_weights
        self.completed_round = 0
        self._dp_plan: DPPlan | None = None
        self._dp_planned = False

    # --- the endpoint ------------------------------------------------------------------------

    async def join(self, request: JoinRequest) -> JoinReply:
        """Register a client that agreed to this very job file."""
        if request.protocol_version != PROTOCOL_VERSION:
            raise ConfigError(
                f"protocol version {request.protocol_version} is not supported "
                f"(this coordinator speaks {PROTOCOL_VERSION})"
            )
        if request.job_config_sha256 != self.job.sha256:
            raise ConfigError(
                f"client {request.client_name!r} agreed to a different job file (sha256 "
                f"{request.job_config_sha256[:12]}...) than this coordinator runs "
                f"({self.job.sha256[:12]}...)"
            )
        record = self.registry.join(
            request.client_name, request.identity_public_key, role=request.role
        )
        log.info("%s %s joined", request.role, record.client_id)
        self._events(Event("client_joined", data={"client": record.client_id, "role": record.role}))
        self._clients_changed.set()
        return JoinReply(client_id=record.client_id, session_token=record.token, job_id=self.job_id)

    async def pull_task(
        self, client_id: str, session_token: str, *, wait: float, working_on: str = ""
    ) -> PullReply:
        """Hand the client its current task, waiting up to ``wait`` seconds for one.

        With ``working_on`` the call is a hold (see
        :meth:`fl_core.transport.base.CoordinatorEndpoint.pull_task`): if it is cancelled while
        that task is still open, the client has gone away and the task is abandoned at once, so
        the stage does not wait for its deadline.
        """
        record = self.registry.get(client_id, session_token)
        record.connected, record.missed = True, False
        with record.open_call(self._clock):
            try:
                if working_on:
                    return await self._hold(record, working_on, wait)
                return await self._next_task(record, wait)
            except asyncio.CancelledError:
                # The client went away while waiting (its process died or it closed the
                # channel). A client ends its holds itself only when this coordinator failed to
                # release one.
                record.connected = False
                record.abandon("the client disconnected")
                raise

    async def _next_task(self, record: ClientRecord, wait: float) -> PullReply:
        deadline = self._clock() + wait
        while True:
            if record.slot is not None and not record.slot.future.done():
                slot = record.slot
                slot.deliveries += 1
                self.traffic.down += slot.payload.nbytes
                return Task(slot.header, slot.payload)
            if self._done is not None:
                record.got_done = True
                self._clients_changed.set()
                return self._done
            remaining = deadline - self._clock()
            if remaining <= 0:
                return Wait()
            record.wakeup.clear()
            try:
                await asyncio.wait_for(record.wakeup.wait(), timeout=remaining)
            except TimeoutError:
                return Wait()

    def transfer(self, client_id: str, session_token: str) -> AbstractContextManager[None]:
        """Count a task's or a result's chunks in flight as an open call of the client.

        Raises:
            UnknownClient: at once (not on entering), for an id or token that is not current.
        """
        return self.registry.get(client_id, session_token).open_call(self._clock)

    async def _hold(self, record: ClientRecord, task_id: str, wait: float) -> PullReply:
        deadline = self._clock() + wait
        while True:
            slot = record.slot
            if slot is None or slot.header.task_id != task_id or slot.future.done():
                return Wait()  # the result arrived, or the task was withdrawn
            remaining = deadline - self._clock()
            if remaining <= 0:
                return Wait()
            record.wakeup.clear()
            try:
                await asyncio.wait_for(record.wakeup.wait(), timeout=remaining)
            except TimeoutError:
                return Wait()

    async def push_result(self, result: Result) -> None:
        """Check a result against its task and the protocol; accept it or raise why not."""
        record = self.registry.get(result.client_id, result.session_token)
        header = result.header
        slot = record.slot
        if header.task_id in record.answered:
            raise DuplicateResult(
                f"task {header.task_id[:12]} (stage {header.stage!r}) was already answered"
            )
        if slot is None or slot.header.task_id != header.task_id or slot.future.done():
            current = f"round {self.completed_round + 1}"
            if slot is not None:
                h = slot.header
                current = f"round {h.round} attempt {h.attempt} stage {h.stage!r}"
            raise StaleResult(
                f"result for job {header.job_id!r} round {header.round} attempt "
                f"{header.attempt} stage {header.stage!r} is not current (current: {current})"
            )
        if slot.header != header:
            h = slot.header
            raise StaleResult(
                f"result for job {header.job_id!r} round {header.round} attempt {header.attempt} "
                f"stage {header.stage!r} does not match the task that was sent (job {h.job_id!r} "
                f"round {h.round} attempt {h.attempt} stage {h.stage!r}); it is not current"
            )
        if result.refusal is not None:
            record.answered.append(header.task_id)
            slot.future.set_result(Refused(result.refusal))
            record.wakeup.set()  # ends the client's hold on this task
            log.warning(
                "client %s refused stage %s: %s: %s",
                record.client_id,
                header.stage,
                result.refusal.code,
                result.refusal.reason,
            )
            self.store.log_event(
                self.job_id,
                kind="refusal",
                round=header.round,
                client=record.client_id,
                detail=f"{header.stage}: {result.refusal.code}: {result.refusal.reason}",
            )
            self.record(
                "refusal",
                direction="received",
                peer=record.client_id,
                round=header.round,
                stage=header.stage,
                reason=result.refusal.reason,
                detail={"attempt": header.attempt, "code": result.refusal.code},
            )
            return
        if result.payload is None:
            raise CodecError("a result must carry a payload or a refusal")
        try:
            value = slot.check(header.stage, record.client_id, result.payload)
        except FlCoreError as exc:
            self.store.log_event(
                self.job_id,
                kind="rejected",
                round=header.round,
                client=record.client_id,
                detail=f"{header.stage}: {type(exc).__name__}: {exc}",
            )
            self.record(
                "rejected",
                direction="received",
                peer=record.client_id,
                round=header.round,
                stage=header.stage,
                reason=f"{type(exc).__name__}: {exc}",
                detail={"attempt": header.attempt},
            )
            raise
        record.answered.append(header.task_id)
        self.traffic.up += result.payload.nbytes
        slot.future.set_result(Accepted(value))
        record.wakeup.set()  # ends the client's hold on this task

    async def leave(self, client_id: str, session_token: str) -> None:
        """Unregister a client."""
        self.registry.leave(client_id, session_token)
        self._clients_changed.set()

    # --- the job loop ------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Send a progress event."""
        self._events(event)

    def protections(self) -> tuple[str, ...]:
        """The job's protections, as audit labels."""
        job = self.job
        kind = "he" if job.job.kind == "stats" else job.aggregation.kind
        return job_protections(
            aggregation=kind,
            dp_mode=job.dp.mode,
            secagg_adversary=job.secagg.adversary if kind == "secagg" else "",
        )

    def record(
        self,
        kind: str,
        *,
        direction: str,
        peer: str = "",
        round: int = 0,
        stage: str = "",
        epsilon: float | None = None,
        reason: str = "",
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Append an entry about this job to the coordinator's audit log (if it keeps one)."""
        if self.audit is None:
            return
        self.audit.append(
            kind,
            direction=direction,
            peer=peer,
            job=self.job_id,
            manifest=self.job.sha256,
            round=round,
            stage=stage,
            protections=self.protections(),
            epsilon=epsilon,
            reason=reason[:MAX_TEXT],
            detail=detail,
        )

    async def wait_for_clients(
        self, count: int, timeout: float, *, role: str = "owner"
    ) -> list[str]:
        """Wait until at least ``count`` clients with ``role`` are live; return them.

        Raises:
            FlCoreError: not enough clients within ``timeout`` seconds.
        """
        deadline = self._clock() + timeout
        while True:
            live = self.registry.live(role)
            if len(live) >= count:
                return live
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise FlCoreError(
                    f"only {len(live)} of the {count} {role}s needed joined within {timeout:g} s"
                )
            self._clients_changed.clear()
            try:
                await asyncio.wait_for(self._clients_changed.wait(), timeout=min(remaining, 1.0))
            except TimeoutError:
                pass

    async def run(self) -> JobDone:
        """Resume the job from the store and run its remaining rounds; return how it ended."""
        return await self._runner(self)

    def dp_plan(self) -> DPPlan | None:
        """The job's DP plan for this model (computed once; ``None`` without DP)."""
        if not self._dp_planned:
            self._dp_plan = make_plan(self.job, dim=int(self.initial_weights.shape[0]))
            self._dp_planned = True
        return self._dp_plan

    def finish(self, done: JobDone) -> None:
        """Mark the job ended and wake every waiting pull."""
        self._done = done
        self.registry.wake_all()

    async def wait_clients_notified(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until every joined client was told that the job ended.

        Clients that disconnected or missed a deadline are not waited for: they are gone, and
        will learn that the job ended if they come back within the grace period.
        """
        deadline = self._clock() + timeout
        while any(not r.got_done and r.connected and not r.missed for r in self.registry.records()):
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            self._clients_changed.clear()
            try:
                await asyncio.wait_for(self._clients_changed.wait(), timeout=min(remaining, 0.5))
            except TimeoutError:
                pass
