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
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..aggregators.base import Aggregator
from ..config import JobConfig
from ..dp.plan import DPPlan, make_plan
from ..errors import (
    CodecError,
    ConfigError,
    DuplicateResult,
    FlCoreError,
    PayloadTooLarge,
    PolicyRefused,
    StaleResult,
)
from ..federation import Roster, coordinator_message, join_message, raw_public, verify
from ..strategies import Strategy
from ..transport.base import (
    CHALLENGE_BYTES,
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

MAX_UPLOADS = 2
"""Result streams one client may have in flight at once."""

CHALLENGE_TTL_S = 120.0
"""How long a join challenge may be answered."""


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
        central_evaluator: scores the global model on the coordinator's own data (DP jobs,
            whose owners refuse to evaluate).
        roster: the federation's verified roster; with one, only its members join, each in
            its role, under its key (and with mutual TLS, its certificate).
        identity_key: the coordinator's Ed25519 key; it signs every join challenge, so owners
            with a roster can check that they talk to the roster's coordinator.
        name: the coordinator's roster name.
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
        roster: Roster | None = None,
        identity_key: Ed25519PrivateKey | None = None,
        name: str = "coordinator",
    ) -> None:
        if roster is not None and identity_key is not None:
            listed = roster.member(name, "coordinator").key
            if listed != raw_public(identity_key.public_key()):
                raise ConfigError(
                    f"the coordinator's identity key is not the key the roster lists for {name!r}"
                )
        self.roster = roster
        self.identity_key = identity_key
        self.name = name
        self._challenges: OrderedDict[tuple[str, str, bytes], tuple[bytes, float]] = OrderedDict()
        self.job = job
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
        """Register a client that agreed to this very job file and proves it holds its key.

        A join takes two calls. The first (no proof) is answered with a fresh challenge, signed
        by the coordinator when it has an identity key. The second carries the challenge and the
        client's Ed25519 signature of :func:`fl_core.federation.join_message` over it; only then
        is the client registered. A challenge is good for one answer and
        :data:`CHALLENGE_TTL_S` seconds. Knowing an owner's public key is therefore not enough
        to join, or rejoin, under its name.

        Raises:
            ConfigError: another protocol version or job file.
            PolicyRefused: not on the roster (in that role, with that key or certificate), a
                proof that fails, a stale or unknown challenge, or the coordinator is full.
        """
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
        name, role, key = request.client_name, request.role, request.identity_public_key
        if len(key) != 32:
            raise PolicyRefused(f"{name!r} sent no Ed25519 identity key; a join needs one")
        if self.roster is not None:
            member = self.roster.member(name, role)
            if member.key != key:
                raise PolicyRefused(
                    f"{name!r} joins with an identity key that is not its key on the roster"
                )
            if member.cert_sha256 and member.cert_sha256 != request.peer_cert_sha256:
                raise PolicyRefused(
                    f"{name!r} did not present its roster TLS certificate "
                    f"(got {request.peer_cert_sha256[:12] or 'none'}, roster "
                    f"{member.cert_sha256[:12]}...)"
                )
        if name not in self.registry and len(self.registry) >= self.job.limits.max_clients:
            raise PolicyRefused(
                f"the coordinator is full: limits.max_clients = {self.job.limits.max_clients}"
            )
        if not request.proof:
            return self._challenge(name, role, key)
        self._check_proof(request)
        record = self.registry.join(name, key, role=role)
        log.info("%s %s joined", request.role, record.client_id)
        self._events(Event("client_joined", data={"client": record.client_id, "role": record.role}))
        self._clients_changed.set()
        return JoinReply(client_id=record.client_id, session_token=record.token, job_id=self.job_id)

    def _challenge(self, name: str, role: str, key: bytes) -> JoinReply:
        now = self._clock()
        while self._challenges:  # expired ones first, then the oldest beyond the limit
            _, (_, expires) = next(iter(self._challenges.items()))
            if expires > now and len(self._challenges) < self.job.limits.max_clients:
                break
            self._challenges.popitem(last=False)
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        self._challenges[(name, role, key)] = (challenge, now + CHALLENGE_TTL_S)
        self._challenges.move_to_end((name, role, key))
        proof = b""
        if self.identity_key is not None:
            proof = self.identity_key.sign(
                coordinator_message(
                    job_sha256=self.job.sha256,
                    coordinator=self.name,
                    client=name,
                    challenge=challenge,
                )
            )
        return JoinReply(
            client_id="",
            session_token="",
            job_id=self.job_id,
            challenge=challenge,
            coordinator_name=self.name,
            coordinator_proof=proof,
        )

    def _check_proof(self, request: JoinRequest) -> None:
        name, role, key = request.client_name, request.role, request.identity_public_key
        issued = self._challenges.pop((name, role, key), None)
        if issued is None or issued[1] <= self._clock():
            raise PolicyRefused(
                f"{name!r} answered a join challenge this coordinator did not issue to it, or one "
                "already used or expired; join again"
            )
        message = join_message(
            job_sha256=self.job.sha256, name=name, role=role, challenge=issued[0]
        )
        if request.challenge != issued[0] or not verify(key, request.proof, message):
            raise PolicyRefused(f"{name!r} did not prove it holds the identity key it joins with")

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

    def transfer(
        self, client_id: str, session_token: str, *, task_id: str = ""
    ) -> AbstractContextManager[None]:
        """Count a task's or a result's chunks in flight as an open call of the client.

        With ``task_id`` (a result upload, before its buffer is allocated): only for the
        client's open task, and at most :data:`MAX_UPLOADS` at a time, so a client cannot make
        the coordinator hold payload buffers for tasks it does not have.

        Raises:
            UnknownClient: at once (not on entering), for an id or token that is not current.
            StaleResult: ``task_id`` is not the client's open task.
            PayloadTooLarge: ``MAX_UPLOADS`` uploads of this client are in flight already.
        """
        record = self.registry.get(client_id, session_token)
        if not task_id:
            return record.open_call(self._clock)
        if task_id in record.answered:
            raise DuplicateResult(f"task {task_id[:12]} was already answered")
        slot = record.slot
        if slot is None or slot.header.task_id != task_id or slot.future.done():
            raise StaleResult(
                f"client {client_id!r} holds no open task {task_id[:16]!r}; its upload is not read"
            )
        if record.uploads >= MAX_UPLOADS:
            raise PayloadTooLarge(
                f"client {client_id!r} has {record.uploads} result uploads in flight "
                f"(at most {MAX_UPLOADS})"
            )
        return record.uploading(self._clock)

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
