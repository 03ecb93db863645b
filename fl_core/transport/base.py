"""Transport interfaces, in domain types only (no protobuf, no grpc).

The coordinator offers a :class:`CoordinatorEndpoint` (join, pull a task, push a result, leave).
A client reaches it through a :class:`ClientTransport` with the same four calls: over real gRPC
(:mod:`fl_core.transport.grpc_client` to :mod:`fl_core.transport.grpc_server`) or in memory
(:mod:`fl_core.transport.inmemory`), which runs the same protocol code for thousands of simulated
clients. Errors are :mod:`fl_core.errors` types on both sides of every transport.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from ..payload import Payload

PROTOCOL_VERSION = 2
"""2: join by proof of possession (a challenge signed with the identity key)."""
CHALLENGE_BYTES = 32
ROLES = ("owner", "keyholder")
"""Who may join: data owners, and the key holder of HE jobs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskHeader:
    """Which task a message belongs to; a result must echo its task's header exactly."""

    job_id: str
    round: int
    attempt: int
    stage: str
    task_id: str
    deadline_unix: float = 0.0


@dataclass(frozen=True, slots=True)
class Task:
    """Work for one client at one stage."""

    header: TaskHeader
    payload: Payload


@dataclass(frozen=True, slots=True)
class Wait:
    """No task yet: pull again (immediately, or after ``retry_after`` seconds)."""

    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class JobDone:
    """The job has ended; the client may leave."""

    status: str
    reason: str = ""


PullReply = Task | Wait | JobDone


@dataclass(frozen=True, slots=True)
class Refusal:
    """A client's reason for not doing a task (policy, budget, protocol abort, error)."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """A client's answer to a task: a payload, or a refusal."""

    client_id: str
    session_token: str
    header: TaskHeader
    payload: Payload | None = None
    refusal: Refusal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinRequest:
    """A data owner asking to take part in the coordinator's job."""

    client_name: str
    identity_public_key: bytes
    job_config_sha256: str
    protocol_version: int = PROTOCOL_VERSION
    role: str = "owner"
    challenge: bytes = b""
    """The coordinator's challenge this join answers (empty on the first call)."""
    proof: bytes = b""
    """Signature of :func:`fl_core.federation.join_message` by the identity key."""
    peer_cert_sha256: str = ""
    """Set by the server transport (never from the wire): the client's TLS certificate."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinReply:
    """The coordinator's answer to a join: the client's id and session token."""

    client_id: str
    session_token: str
    job_id: str
    challenge: bytes = b""
    """First call: the challenge to sign (``client_id`` and ``session_token`` are empty)."""
    coordinator_name: str = ""
    coordinator_proof: bytes = b""


class ClientCalls(Protocol):
    """The four calls a client makes, whatever carries them."""

    async def join(self, request: JoinRequest) -> JoinReply:
        """Register a client (again, after either side restarted)."""
        ...

    async def pull_task(
        self, client_id: str, session_token: str, *, wait: float, working_on: str = ""
    ) -> PullReply:
        """Return the client's next task, waiting up to ``wait`` seconds for one.

        With ``working_on`` (the id of a task the client is computing) the call is a hold: it
        delivers nothing and returns :class:`Wait` once that task's result has arrived or after
        ``wait``; while it is open, the coordinator knows at once if the client goes away.
        """
        ...

    async def push_result(self, result: Result) -> None:
        """Accept a result, or raise an ``fl_core.errors`` error saying why it is rejected."""
        ...

    async def leave(self, client_id: str, session_token: str) -> None:
        """Unregister a client."""
        ...


class CoordinatorEndpoint(ClientCalls, Protocol):
    """What a coordinator offers to clients, whatever carries the calls."""

    def transfer(
        self, client_id: str, session_token: str, *, task_id: str = ""
    ) -> AbstractContextManager[None]:
        """Count a transport's streaming of a task or a result as an open call of the client.

        A transport that moves a payload in chunks after `pull_task` returned (or before
        `push_result` is called) holds this open meanwhile, so that liveness does not take a
        client whose bytes are still moving for one that went away. For a result upload
        (``task_id`` given) it is called before any buffer is allocated: the client must hold
        that task open, and may have only a few uploads in flight.

        Raises:
            UnknownClient: when called (not on entering), for an id that is not joined or a
                token that is not its current one.
            StaleResult: ``task_id`` is not the client's open task.
            PayloadTooLarge: the client already has its uploads in flight.
        """
        ...


class ClientTransport(ClientCalls, Protocol):
    """A client's connection to a coordinator."""

    async def close(self) -> None:
        """Release the connection."""
        ...
