"""The data owner's runtime: dial out, join, long-poll for tasks, answer them, leave.

Every task is checked against the owner's policy, then dispatched to the protocol's client state
machine for its round attempt (a new attempt gets a new state machine: fresh keys, nothing
reused). Work runs in a worker thread so that one event loop can host thousands of simulated
clients. A task the owner will not or cannot do is answered with a refusal and a reason, never
with silence. Connection failures are retried with exponential backoff; when the coordinator has
forgotten the session (it restarted), the client joins again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..aggregators import ClientContext, create_client_round, handle_evaluate
from ..aggregators.base import ClientRound
from ..audit import MAX_TEXT, AuditLog, job_protections
from ..config import JobConfig, field_digests
from ..dp.owner import OwnerPrivacy
from ..dp.plan import make_plan
from ..errors import (
    BudgetExceeded,
    CodecError,
    ConfigError,
    DuplicateResult,
    FlCoreError,
    PolicyRefused,
    ProtocolError,
    StaleResult,
    TransportError,
    TransportTimeout,
    TransportUnavailable,
    UnknownClient,
)
from ..federation import Roster, coordinator_message, join_message, verify
from ..payload import Payload
from ..transport.base import (
    CHALLENGE_BYTES,
    ClientTransport,
    JobDone,
    JoinReply,
    JoinRequest,
    Refusal,
    Result,
    Task,
    Wait,
)
from ..types import EvaluateResult, Layout, Trainer
from .consent import DataUse
from .policy import OwnerPolicy
from .release import Releases

log = logging.getLogger("bulwark.client")

T = TypeVar("T")

Observer = Callable[[str, str, Mapping[str, object]], None]
"""Sees ``(kind, direction, detail)`` of each entry a participant records (see ``observer``)."""

HOLD_RELEASE_S = 5.0
"""How long a client waits, after pushing a result, for the coordinator to end its hold."""

HOLD_AFTER_S = 1.0
"""A task still unanswered after this long gets a hold; a quicker one is answered without the
extra call. Well inside the coordinator's silence grace (3 s), so a client that dies before its
hold opens is still noticed then."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientOptions:
    """Timing of the client runtime.

    Attributes:
        long_poll_s: how long one pull may wait for a task.
        backoff_initial_s: first wait after a failed call; doubles up to ``backoff_max_s``.
        backoff_max_s: the longest wait between retries.
        give_up_after_s: stop when the coordinator stays unreachable this long.
    """

    long_poll_s: float = 20.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    give_up_after_s: float = 600.0


def refusal_for(exc: BaseException) -> Refusal:
    """The refusal a client sends for an exception raised while doing a task."""
    if isinstance(exc, BudgetExceeded):
        return Refusal("budget", exc.reason)
    if isinstance(exc, PolicyRefused):
        return Refusal("policy", exc.reason)
    if isinstance(exc, CodecError):
        return Refusal("bad_task", str(exc))
    if isinstance(exc, ProtocolError):
        return Refusal("protocol_abort", str(exc))
    return Refusal("error", f"{type(exc).__name__}: {exc}")


class Participant:
    """Anyone who dials out to a coordinator and answers tasks: the join/pull/answer/leave loop.

    Subclasses say what they are (``role``), check the job before joining (:meth:`check_job`)
    and answer tasks (:meth:`handle`, run in a worker thread).

    Args:
        name: the enrolled name (the client id).
        job: the job file agreed to (its hash must match the coordinator's).
        identity_key: the long-term Ed25519 key (a fresh one when omitted).
        options: timing of retries and polls.
        roster: the federation's verified roster: the participant must be on it under its
            key, joins only the roster's coordinator (checked by its signed challenge), and
            takes only roster owners as secure-aggregation peers.
        audit: the participant's audit log (what it received, sent and refused; none when
            omitted).
        tls: whether its connection to the coordinator is TLS (``None``: not stated).
        coordinator: the name of the coordinator it takes part under, as the owner configured
            it (empty: not stated); with a roster, the name the coordinator proves at join.
        observer: called with ``(kind, direction, detail)`` of every entry the participant
            records, with or without an audit log (``bulwark client --metrics-port`` counts
            them); it must not raise.

    Attributes:
        data_use: an owner's record of what its tasks read (:class:`~fl_core.client.consent.
            DataUse`): checked against withdrawals before each task, and each answered round
            recorded in its ledger before the answer is sent; ``None``: not recorded.
    """

    role = "owner"
    data_use: DataUse | None = None

    def __init__(
        self,
        *,
        name: str,
        job: JobConfig,
        identity_key: Ed25519PrivateKey | None = None,
        options: ClientOptions | None = None,
        roster: Roster | None = None,
        audit: AuditLog | None = None,
        tls: bool | None = None,
        coordinator: str = "",
        observer: Observer | None = None,
    ) -> None:
        self.name = name
        self.job = job
        self.identity_key = identity_key or Ed25519PrivateKey.generate()
        self.roster = roster
        if roster is not None and roster.member(name, self.role).key != self.public_key:
            raise ConfigError(
                f"{name!r}'s identity key is not the key the roster lists for it as {self.role}"
            )
        self.options = options or ClientOptions()
        self.audit = audit
        self.observer = observer
        self.tls = tls
        self.coordinator = coordinator
        self._client_id = ""
        self._token = ""
        self.tasks_done = 0
        self.refusals: list[Refusal] = []

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 identity public key."""
        return self.identity_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def check_job(self) -> None:
        """Refuse the whole job before joining (raise PolicyRefused); accepts by default."""

    def check_coordinator(self) -> None:
        """Refuse the coordinator once it proved its roster name at join; accepts by default."""

    def handle(self, task: Task) -> Payload:
        """Answer one task (runs in a worker thread); raise to refuse it with a reason."""
        raise NotImplementedError

    # --- the audit trail ---------------------------------------------------------------------

    def protections(self) -> tuple[str, ...]:
        """The protections in force for this participant's job, as audit labels."""
        job = self.job
        kind = "he" if job.job.kind == "stats" else job.aggregation.kind
        return job_protections(
            aggregation=kind,
            dp_mode=job.dp.mode,
            secagg_adversary=job.secagg.adversary if kind == "secagg" else "",
            tls=self.tls,
        )

    def record(
        self,
        kind: str,
        *,
        direction: str,
        round: int = 0,
        stage: str = "",
        epsilon: float | None = None,
        reason: str = "",
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Append an entry about this job, to or from the coordinator, to the audit log.

        Nothing is written without a log; the observer, if any, sees the entry either way.
        Arguments as :meth:`fl_core.audit.AuditLog.append`.
        """
        if self.observer is not None:
            self.observer(kind, direction, detail or {})
        if self.audit is None:
            return
        self.audit.append(
            kind,
            direction=direction,
            peer=self.coordinator or "coordinator",
            job=self.job.job.name,
            manifest=self.job.sha256,
            round=round,
            stage=stage,
            protections=self.protections(),
            epsilon=epsilon,
            reason=reason[:MAX_TEXT],
            detail=detail,
        )

    def last_charge(self) -> tuple[int, float] | None:
        """(charges so far, this job's epsilon after the last), for the audit of a release."""
        return None

    def answer(self, task: Task) -> Payload:
        """Answer a task as the runtime does (in a worker thread), recorded in the audit log.

        :meth:`handle` answers it; the task, then the release or the refusal with its reason,
        are appended to the audit log.

        Raises:
            Exception: whatever :meth:`handle` raised to refuse the task (after recording it).
        """
        header = task.header
        round, stage = header.round, header.stage
        self.record(
            "task",
            direction="received",
            round=round,
            stage=stage,
            detail={"attempt": header.attempt, "bytes": task.payload.nbytes},
        )
        before = self.last_charge()
        try:
            if self.data_use is not None:
                self.data_use.check()
            payload = self.handle(task)
            if self.data_use is not None:  # in the ledger before the answer is sent
                self.data_use.record(job=self.job.job.name, round=round)
        except Exception as exc:
            refusal = refusal_for(exc)
            self.record(
                "refusal",
                direction="refused",
                round=round,
                stage=stage,
                reason=refusal.reason,
                detail={"attempt": header.attempt, "code": refusal.code},
            )
            raise
        after = self.last_charge()
        self.record(
            "release",
            direction="sent",
            round=round,
            stage=stage,
            epsilon=after[1] if after is not None and after != before else None,
            detail={"attempt": header.attempt, "bytes": payload.nbytes, "fields": sorted(payload)},
        )
        return payload

    async def run(self, transport: ClientTransport) -> JobDone:
        """Take part in the job until it ends; return how it ended.

        Raises:
            PolicyRefused: the participant's policy refuses the job itself.
            TransportError: the coordinator stayed unreachable for ``give_up_after_s``.
            ConfigError: the coordinator runs a different job file.
        """
        try:
            self.check_job()
        except PolicyRefused as exc:
            self.record("job_refused", direction="refused", reason=exc.reason)
            raise
        self.record("job_accepted", direction="local", detail={"rounds": self.job.job.rounds})
        await self._join(transport)
        while True:
            try:
                reply = await self._retrying(
                    lambda: transport.pull_task(
                        self._client_id, self._token, wait=self.options.long_poll_s
                    )
                )
            except UnknownClient:
                await self._join(transport)
                continue
            if isinstance(reply, JobDone):
                self.record(
                    "job_done",
                    direction="received",
                    reason=reply.reason,
                    detail={"status": reply.status, "tasks": self.tasks_done},
                )
                try:
                    await transport.leave(self._client_id, self._token)
                except FlCoreError as exc:
                    log.info("%s: leave failed (%s); the job is over anyway", self.name, exc)
                return reply
            if isinstance(reply, Wait):
                if reply.retry_after:
                    await asyncio.sleep(reply.retry_after)
                continue
            await self._do(reply, transport)

    async def _join(self, transport: ClientTransport) -> None:
        reply = await self._retrying(lambda: self._join_once(transport))
        self._client_id, self._token = reply.client_id, reply.session_token
        self.record("joined", direction="sent", detail={"client_id": reply.client_id})
        log.info("%s joined job %s", self.name, reply.job_id)

    async def _join_once(self, transport: ClientTransport) -> JoinReply:
        """Ask for a challenge, check who signed it (with a roster), answer it signed."""
        request = JoinRequest(
            client_name=self.name,
            identity_public_key=self.public_key,
            job_config_sha256=self.job.sha256,
            role=self.role,
            job_fields=field_digests(self.job.source),
        )
        offer = await transport.join(request)
        if len(offer.challenge) != CHALLENGE_BYTES:
            raise ProtocolError("the coordinator did not answer the join with a challenge")
        if self.roster is not None:
            coordinator = self.roster.member(offer.coordinator_name, "coordinator")
            message = coordinator_message(
                job_sha256=self.job.sha256,
                coordinator=offer.coordinator_name,
                client=self.name,
                challenge=offer.challenge,
            )
            if not verify(coordinator.key, offer.coordinator_proof, message):
                raise PolicyRefused(
                    f"the coordinator did not prove it is {offer.coordinator_name!r} of the "
                    f"roster (federation {self.roster.federation!r}); not joining"
                )
            self.coordinator = offer.coordinator_name  # proven: the name the policy checks
            self.check_coordinator()
        proof = self.identity_key.sign(
            join_message(
                job_sha256=self.job.sha256,
                name=self.name,
                role=self.role,
                challenge=offer.challenge,
            )
        )
        reply = await transport.join(
            dataclasses.replace(request, challenge=offer.challenge, proof=proof, job_fields={})
        )
        if not reply.client_id or not reply.session_token:
            raise ProtocolError("the coordinator accepted the join proof but sent no session")
        return reply

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        delay = self.options.backoff_initial_s
        first_failure: float | None = None
        while True:
            try:
                return await call()
            except (TransportUnavailable, TransportTimeout) as exc:
                now = time.monotonic()
                first_failure = first_failure or now
                if now - first_failure > self.options.give_up_after_s:
                    raise TransportUnavailable(
                        f"coordinator unreachable for {self.options.give_up_after_s:g} s: {exc}"
                    ) from exc
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter only
                delay = min(delay * 2, self.options.backoff_max_s)

    async def _do(self, task: Task, transport: ClientTransport) -> None:
        header = task.header
        working = asyncio.Event()
        hold = asyncio.create_task(self._hold(transport, header.task_id, working))
        try:
            await self._answer(task, transport)
        except BaseException:
            hold.cancel()  # going down: the coordinator sees the held call end at once
            raise
        working.set()
        # The coordinator ends the hold once it has the result. asyncio.timeout, not wait_for:
        # Python 3.11's wait_for drops a cancellation that arrives as the hold ends, and a
        # cancelled (killed) client must stop.
        try:
            async with asyncio.timeout(HOLD_RELEASE_S):
                await hold
        except (TimeoutError, FlCoreError):
            hold.cancel()

    async def _hold(self, transport: ClientTransport, task_id: str, done: asyncio.Event) -> None:
        """Keep a call open while computing, so the coordinator notices if this client dies."""
        try:
            async with asyncio.timeout(HOLD_AFTER_S):
                await done.wait()
            return  # answered quickly: no hold needed
        except TimeoutError:
            pass
        while not done.is_set():
            try:
                await transport.pull_task(
                    self._client_id,
                    self._token,
                    wait=self.options.long_poll_s,
                    working_on=task_id,
                )
            except FlCoreError:
                return  # the hold is an optimisation: the stage deadline still applies

    async def _answer(self, task: Task, transport: ClientTransport) -> None:
        header = task.header
        try:
            payload: Payload | None = await asyncio.to_thread(self.answer, task)
            refusal = None
        except Exception as exc:  # noqa: BLE001 - every failure becomes a stated refusal
            payload, refusal = None, refusal_for(exc)
            self.refusals.append(refusal)
            log.warning(
                "%s refuses %s of round %d: %s",
                self.name,
                header.stage,
                header.round,
                refusal.reason,
            )
            if refusal.code == "error":
                log.debug("%s: task failed", self.name, exc_info=exc)
        result = Result(
            client_id=self._client_id,
            session_token=self._token,
            header=header,
            payload=payload,
            refusal=refusal,
        )
        try:
            await self._retrying(lambda: transport.push_result(result))
            self.tasks_done += 1
        except (StaleResult, DuplicateResult, UnknownClient) as exc:
            log.info("%s: result for %s not taken: %s", self.name, header.stage, exc)
        except (CodecError, ProtocolError, TransportError) as exc:
            log.warning("%s: result for %s rejected: %s", self.name, header.stage, exc)


class Client(Participant):
    """A data owner taking part in one job.

    Args:
        name: the owner's enrolled name (its client id).
        job: the job file the owner agreed to (its hash must match the coordinator's).
        trainer: the owner's local computation.
        identity_key: the owner's long-term Ed25519 key (a fresh one when omitted).
        policy: the owner's rules (none when omitted).
        ledger: the owner's privacy-ledger file, needed when the job spends privacy budget.
        dataset: the ledger's name for the data this owner trains on (default: the job's).
        options: timing of retries and polls.
        roster: the federation's verified roster (see :class:`Participant`); it also resolves
            the policy's party names.
        audit: the owner's audit log (see :class:`Participant`).
        tls: whether the connection to the coordinator is TLS (``policy.require_tls`` needs
            ``True``).
        coordinator: the coordinator's name (``policy.allowed_coordinators``; see
            :class:`Participant`).
        observer: sees every recorded entry (see :class:`Participant`).
    """

    role = "owner"

    def __init__(
        self,
        *,
        name: str,
        job: JobConfig,
        trainer: Trainer,
        identity_key: Ed25519PrivateKey | None = None,
        policy: OwnerPolicy | None = None,
        ledger: str | Path | None = None,
        dataset: str | None = None,
        options: ClientOptions | None = None,
        roster: Roster | None = None,
        audit: AuditLog | None = None,
        tls: bool | None = None,
        coordinator: str = "",
        observer: Observer | None = None,
    ) -> None:
        super().__init__(
            name=name,
            job=job,
            identity_key=identity_key,
            options=options,
            roster=roster,
            audit=audit,
            tls=tls,
            coordinator=coordinator,
            observer=observer,
        )
        self.trainer = trainer
        self.policy = (policy or OwnerPolicy()).resolved(roster)
        self._job_refusal: PolicyRefused | None = None
        self._job_checked = False
        self.layout = Layout.of(trainer.initial_weights())
        plan = make_plan(job, dim=self.layout.total)
        privacy = None
        if plan is not None:
            privacy = OwnerPrivacy(
                job_id=job.job.name,
                plan=plan,
                ledger_path=ledger,
                dataset=dataset or job.data.dataset,
                max_epsilon=self.policy.max_epsilon,
                max_round_epsilon=self.policy.max_round_epsilon,
            )
        self.context = ClientContext(
            client_id=name,
            job=job,
            trainer=trainer,
            layout=self.layout,
            identity_key=self.identity_key,
            policy=self.policy,
            privacy=privacy,
            releases=Releases(job, max_releases=self.policy.max_releases),
            roster=roster,
        )
        self._budget_checked = False
        self._round_key: tuple[int, int] | None = None
        self._round: ClientRound | None = None

    def check_job(self) -> None:
        """The owner's policy decides whether it takes part at all (checked once, then cached).

        The noise floor is checked against the noise the owner computes itself: its DP plan's
        (central DP) or its DP-SGD trainer's calibrated noise multiplier.
        """
        if not self._job_checked:
            try:
                self.policy.check_job(
                    self.job, coordinator=self.coordinator, tls=self.tls, roster=self.roster
                )
                privacy = self.context.privacy
                if self.policy.min_noise_multiplier and privacy is not None:
                    noise = getattr(self.trainer, "noise_multiplier", privacy.plan.noise_multiplier)
                    self.policy.check_noise(float(noise))
            except PolicyRefused as exc:
                self._job_refusal = exc
            self._job_checked = True
        if self._job_refusal is not None:
            raise PolicyRefused(self._job_refusal.reason)
        if self.context.privacy is not None and not self._budget_checked:
            # Once, before joining (the runtime checks the job first): when not even one release
            # can fit the cap, refusing is certain. Later releases are charged one by one.
            self.context.privacy.check_first_round()
            self._budget_checked = True

    def check_coordinator(self) -> None:
        """The owner's list of coordinators, against the name the coordinator proved at join.

        Raises:
            PolicyRefused: the proven name is not on ``policy.allowed_coordinators`` (recorded
                in the audit log; the owner does not join).
        """
        try:
            self.policy.check_coordinator(self.coordinator, self.roster)
        except PolicyRefused as exc:
            self.record("coordinator_refused", direction="refused", reason=exc.reason)
            raise

    def last_charge(self) -> tuple[int, float] | None:
        """(charges so far, this job's epsilon after the last), from the owner's own ledger."""
        privacy = self.context.privacy
        return None if privacy is None else privacy.last_charge

    def handle(self, task: Task) -> Payload:
        """Check the task against the policy, then answer it with the round's state machine."""
        header = task.header
        if header.job_id != self.job.job.name:
            raise PolicyRefused(f"task for job {header.job_id!r}, not {self.job.job.name!r}")
        self.check_job()  # the whole job, against the policy, before any data is read
        self.policy.check_task(self.job, stage=header.stage, round=header.round)
        self.context.releases.check_round(header.round)
        if header.stage == "evaluate":
            if self.job.dp.mode != "none":
                raise PolicyRefused(
                    "this is a DP job: evaluation answers on the owner's data are not covered by "
                    "its privacy budget"
                )
            self.context.releases.evaluation(round=header.round)
            return handle_evaluate(task.payload, dim=self.layout.total, evaluate=self._evaluate)
        key = (header.round, header.attempt)
        if self._round_key != key or self._round is None:
            self._round = create_client_round(
                self.context, round=header.round, attempt=header.attempt
            )
            self._round_key = key
        return self._round.handle(header.stage, task.payload)

    def _evaluate(self, flat: npt.NDArray[np.float32]) -> EvaluateResult:
        weights = self.layout.unflatten(np.array(flat, dtype=np.float32, copy=True))
        return self.trainer.evaluate(weights)
