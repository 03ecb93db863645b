"""The generic stage driver: send a task per client, collect until all answered or the deadline.

For one stage the driver hands each live client its task, then waits until every client has
answered, refused or abandoned its task, or until the stage's deadline. Results are checked by the
protocol when they arrive (see :meth:`Coordinator.push_result`), so the driver only sees accepted
ones. Whoever did not answer by the deadline counts as dropped at this stage; if fewer than the
quorum answered, the round aborts with :class:`~fl_core.errors.RoundAborted` naming the stage.
The protocol itself never sees the transport.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import RoundAborted
from ..payload import Payload
from ..transport.base import Refusal, TaskHeader
from .registry import Abandoned, Accepted, ClientRegistry, Refused, new_slot


@dataclass(frozen=True, slots=True, kw_only=True)
class StageOutcome:
    """What one stage produced."""

    stage: str
    sent: int
    results: dict[str, object]
    refused: dict[str, Refusal] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()
    seconds: float = 0.0


ProgressFn = Callable[[str, int, int], None]
"""Called with (stage, answered, sent) whenever a client answers."""


LIVENESS_CHECK_S = 0.5
"""How often a stage looks for clients that have gone silent."""

SILENCE_GRACE_S = 3.0
"""A client with a task and no open call for this long has gone away (a live client always has
one open: a long poll while it waits, a hold while it computes)."""


class StageDriver:
    """Runs stages over the clients in a :class:`ClientRegistry`."""

    def __init__(self, registry: ClientRegistry, *, clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self._clock = clock

    def _drop_silent(self, pending: set[str]) -> None:
        now = self._clock()
        for cid in pending:
            record = self._registry.find(cid)
            if record is None or record.open_calls > 0:
                continue
            if now - record.last_seen > SILENCE_GRACE_S:
                record.connected = False
                record.abandon("the client has had no open call for a while; it is gone")

    async def run_stage(
        self,
        *,
        job_id: str,
        round: int,
        attempt: int,
        stage: str,
        tasks: Mapping[str, Payload],
        check: Callable[[str, str, Payload], object],
        quorum: int,
        timeout: float,
        progress: ProgressFn | None = None,
    ) -> StageOutcome:
        """Run one stage and return its outcome.

        Raises:
            RoundAborted: fewer than ``quorum`` clients answered before the deadline.
        """
        started = self._clock()
        deadline = started + timeout
        slots = {}
        dropped: list[str] = []
        for client_id, payload in tasks.items():
            record = self._registry.find(client_id)
            if record is None or not record.connected:
                dropped.append(client_id)
                continue
            header = TaskHeader(
                job_id=job_id,
                round=round,
                attempt=attempt,
                stage=stage,
                task_id=uuid.uuid4().hex,
                deadline_unix=deadline,
            )
            slot = new_slot(header, payload, client_id, check)
            record.assign(slot)
            slots[client_id] = slot
        futures = {slot.future: cid for cid, slot in slots.items()}
        answered = 0
        pending = set(futures)
        try:
            while pending:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                done, pending = await asyncio.wait(
                    pending,
                    timeout=min(remaining, LIVENESS_CHECK_S),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                answered += len(done)
                if progress is not None and done:
                    progress(stage, answered, len(slots))
                self._drop_silent({futures[f] for f in pending})
        finally:
            for cid, slot in slots.items():
                record = self._registry.find(cid)
                if record is not None and record.slot is slot:
                    record.slot = None
                if not slot.future.done():
                    slot.future.cancel()
        results: dict[str, object] = {}
        refused: dict[str, Refusal] = {}
        for future, cid in futures.items():
            if future.cancelled():
                dropped.append(cid)
                late = self._registry.find(cid)
                if late is not None:
                    late.missed = True  # not sampled again until it pulls again
                continue
            outcome = future.result()
            if isinstance(outcome, Accepted):
                results[cid] = outcome.value
            elif isinstance(outcome, Refused):
                refused[cid] = outcome.refusal
                dropped.append(cid)
            elif isinstance(outcome, Abandoned):
                dropped.append(cid)
        outcome_ = StageOutcome(
            stage=stage,
            sent=len(tasks),
            results=results,
            refused=refused,
            dropped=tuple(sorted(dropped)),
            seconds=self._clock() - started,
        )
        if len(results) < quorum:
            detail = f"{len(results)} of {len(tasks)} clients answered, quorum is {quorum}"
            if refused:
                detail += "; refusals: " + "; ".join(
                    f"{c}: {r.code}: {r.reason}" for c, r in sorted(refused.items())
                )
            raise RoundAborted(stage=stage, reason=detail)
        return outcome_
