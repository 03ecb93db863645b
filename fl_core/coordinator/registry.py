"""Connected clients: identities, session tokens, liveness, task slots and sampling.

A client joins under its enrolled name and identity key and gets a session token that its later
calls must present. A client that joins again under the same name (after its process or the
coordinator restarted) gets a new token; whatever task it held is abandoned, so the stage driver
counts it as dropped at once instead of waiting for the deadline. A name that joined with one
identity key cannot come back with another.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PolicyRefused, UnknownClient
from ..payload import Payload
from ..transport.base import Refusal, TaskHeader

LIVENESS_WINDOW_S = 90.0
"""A client that has not called for this long is no longer sampled."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A result that passed its checks; ``value`` is what the protocol's check returned."""

    value: object


@dataclass(frozen=True, slots=True)
class Refused:
    """The client refused the task, with its reason."""

    refusal: Refusal


@dataclass(frozen=True, slots=True)
class Abandoned:
    """The client re-joined or left while holding the task."""

    reason: str


SlotOutcome = Accepted | Refused | Abandoned


@dataclass(slots=True, eq=False)
class TaskSlot:
    """One task handed to one client, and the future its outcome resolves."""

    header: TaskHeader
    payload: Payload
    client_id: str
    check: Callable[[str, str, Payload], object]
    future: asyncio.Future[SlotOutcome]
    deliveries: int = 0


@dataclass(slots=True, eq=False)
class ClientRecord:
    """A joined client."""

    client_id: str
    identity_key: bytes
    role: str
    token: str = field(repr=False)
    joined: float
    last_seen: float
    slot: TaskSlot | None = None
    open_calls: int = 0  # long polls, holds and payload transfers in progress
    uploads: int = 0  # result streams in progress
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    answered: deque[str] = field(default_factory=lambda: deque(maxlen=64))
    got_done: bool = False
    connected: bool = True
    missed: bool = False

    @contextmanager
    def open_call(self, clock: Callable[[], float]) -> Iterator[None]:
        """Count the enclosed work (a payload transfer) as an open call of this client."""
        self.open_calls += 1
        try:
            yield
        finally:
            self.open_calls -= 1
            self.last_seen = clock()

    @contextmanager
    def uploading(self, clock: Callable[[], float]) -> Iterator[None]:
        """Count a result upload in flight (also an open call)."""
        self.uploads += 1
        try:
            with self.open_call(clock):
                yield
        finally:
            self.uploads -= 1

    def assign(self, slot: TaskSlot) -> None:
        """Give this client a task and wake its pending pull."""
        self.slot = slot
        self.wakeup.set()

    def abandon(self, reason: str) -> None:
        """Resolve the held task (if still open) as abandoned."""
        if self.slot is not None and not self.slot.future.done():
            self.slot.future.set_result(Abandoned(reason))
        self.slot = None
        self.wakeup.set()


class ClientRegistry:
    """The coordinator's table of joined clients."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._clients: dict[str, ClientRecord] = {}
        self._keys: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    def join(self, name: str, identity_key: bytes, *, role: str = "owner") -> ClientRecord:
        """Register ``name`` (again); returns the record with a fresh session token.

        Raises:
            PolicyRefused: the name joined before with a different identity key.
        """
        known = self._keys.get(name)
        old = self._clients.get(name)
        if old is not None and old.role != role:
            raise PolicyRefused(f"{name!r} joined as {old.role!r}; it cannot rejoin as {role!r}")
        if known is not None and known != identity_key:
            raise PolicyRefused(
                f"client {name!r} joined before with a different identity key; refusing"
            )
        self._keys[name] = identity_key
        now = self._clock()
        if old is not None:
            old.abandon("the client joined again")
        record = ClientRecord(
            client_id=name,
            identity_key=identity_key,
            role=role,
            token=secrets.token_hex(16),
            joined=now,
            last_seen=now,
        )
        self._clients[name] = record
        return record

    def get(self, client_id: str, token: str) -> ClientRecord:
        """Return the record of an authenticated client.

        Raises:
            UnknownClient: the id is not joined, or the token is not its current one.
        """
        record = self._clients.get(client_id)
        if record is None:
            raise UnknownClient(f"client {client_id[:64]!r} is not joined; join first")
        if not secrets.compare_digest(record.token, token):
            raise UnknownClient(f"session token of client {client_id[:64]!r} is not current")
        record.last_seen = self._clock()
        return record

    def find(self, client_id: str) -> ClientRecord | None:
        """Return a record without authentication (for the coordinator's own use)."""
        return self._clients.get(client_id)

    def leave(self, client_id: str, token: str) -> None:
        """Remove an authenticated client."""
        record = self.get(client_id, token)
        record.abandon("the client left")
        del self._clients[client_id]

    def identity_keys(self, role: str = "owner") -> dict[str, bytes]:
        """Identity public keys of the joined clients with ``role``."""
        return {cid: r.identity_key for cid, r in self._clients.items() if r.role == role}

    def live(self, role: str = "owner") -> list[str]:
        """Ids of the clients that can be sampled, sorted.

        A client is live while it has a call open (a pull, a hold, a transfer), or when it
        called within the liveness window and has neither disconnected nor missed a deadline
        since.
        """
        now = self._clock()
        return sorted(
            cid
            for cid, r in self._clients.items()
            if r.role == role
            and (
                r.open_calls > 0
                or (r.connected and not r.missed and now - r.last_seen <= LIVENESS_WINDOW_S)
            )
        )

    def records(self) -> list[ClientRecord]:
        """All records."""
        return list(self._clients.values())

    def wake_all(self) -> None:
        """Wake every pending pull (the job ended)."""
        for record in self._clients.values():
            record.wakeup.set()


def sample_cohort(
    available: list[str],
    *,
    fraction: float,
    min_clients: int,
    poisson: bool,
    rng: np.random.Generator,
) -> list[str]:
    """Choose a round's cohort from the available clients.

    Fixed-size sampling draws ``max(min_clients, round(fraction * n))`` clients uniformly without
    replacement. Poisson sampling includes each client independently with probability
    ``fraction`` (the sampling that DP amplification by subsampling assumes); its cohort may be
    smaller than ``min_clients`` and is not topped up, since that would change the guarantee.
    """
    ordered = sorted(available)
    if poisson:
        keep = rng.random(len(ordered)) < fraction
        return [c for c, k in zip(ordered, keep, strict=True) if k]
    size = min(len(ordered), max(min_clients, int(math.floor(fraction * len(ordered) + 0.5))))
    picked = rng.choice(len(ordered), size=size, replace=False)
    return sorted(ordered[i] for i in picked)


def new_slot(
    header: TaskHeader,
    payload: Payload,
    client_id: str,
    check: Callable[[str, str, Payload], object],
) -> TaskSlot:
    """A task slot whose future belongs to the running event loop."""
    loop: Any = asyncio.get_running_loop()
    return TaskSlot(header, payload, client_id, check, loop.create_future())
