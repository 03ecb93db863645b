"""The coordinator's gRPC adapter: limits, serde, then the endpoint. No protocol logic here.

Runs on ``grpc.aio`` so that thousands of long-polling clients do not each hold a thread. Every
rejected call is logged with the client and the reason, and answered with the status code of the
fl_core error that rejected it (see :mod:`fl_core.transport.errors`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..config import Limits
from ..errors import CodecError, FlCoreError
from ..federation import cert_fingerprint
from ._pb import coordinator_pb2 as pb
from .base import CoordinatorEndpoint, JobDone, Result, Wait
from .chunking import (
    BlobAssembler,
    DataChunk,
    decode_data_chunk,
    encode_data_chunk,
    iter_chunk_parts,
)
from .errors import ERROR_TRAILER, status_for
from .serde import (
    blob_size,
    header_from_proto,
    header_to_proto,
    join_reply_to_proto,
    join_request_from_proto,
    payload_from_proto,
    payload_to_proto,
    refusal_from_proto,
)

log = logging.getLogger("bulwark.coordinator")

MAX_LONG_POLL_S = 60.0
MAX_TASK_ID = 64


def channel_options(limits: Limits) -> list[tuple[str, int]]:
    """GRPC options shared by server and client: message limits and keepalive."""
    max_message = limits.chunk_bytes + limits.max_header_bytes + (64 << 10)
    return [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ]


SERVICE = "bulwark.v1.Coordinator"
"""The gRPC service name (also the name the health service reports)."""


class Malformed:
    """Stands in for a request that did not parse, so the servicer can answer it cleanly."""

    __slots__ = ("reason", "type_name")

    def __init__(self, type_name: str, reason: str) -> None:
        self.type_name = type_name
        self.reason = reason


def _safe(message_type: type[Message]) -> Callable[[bytes], object]:
    def parse(data: bytes) -> object:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return Malformed(message_type.__name__, str(exc))

    return parse


ChunkIn = pb.ResultChunk | DataChunk | Malformed
"""What a result stream's deserializer hands the servicer."""


def _safe_chunk(message_type: type[Message]) -> Callable[[bytes], object]:
    """Parse a chunk message: a lone data field without protobuf's copies, the rest with it."""
    parse = _safe(message_type)

    def parse_chunk(data: bytes) -> object:
        return decode_data_chunk(data) or parse(data)

    return parse_chunk


def serialize(message: Message | bytes) -> bytes:
    """A message's wire bytes; chunks encoded by `encode_data_chunk` pass through as they are."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def _reject_malformed(request: object) -> None:
    _parsed(request)


T = TypeVar("T")


def _parsed(request: T | Malformed) -> T:
    """The request, or the error that names why it did not parse."""
    if isinstance(request, Malformed):
        raise CodecError(f"malformed {request.type_name} message: {request.reason}")
    return request


def _who(request: object, what: str, attr: str) -> str:
    """Who sent ``request``, for the log (a malformed request has no fields to read)."""
    if isinstance(request, Malformed):
        return f"malformed {request.type_name}"
    return f"{what} {str(getattr(request, attr, ''))[:64]!r}"


async def _abort(context: grpc.aio.ServicerContext, error: FlCoreError, who: str) -> None:
    log.warning("rejected %s: %s: %s", who, type(error).__name__, error)
    await context.abort(
        status_for(error), str(error), trailing_metadata=((ERROR_TRAILER, type(error).__name__),)
    )


def _peer_cert_sha256(context: grpc.aio.ServicerContext) -> str:
    """SHA-256 of the client certificate the mutual-TLS handshake verified ("" without one)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    return cert_fingerprint(pems[0]) if pems else ""


class CoordinatorServicer:
    """Adapts gRPC calls to a :class:`~fl_core.transport.base.CoordinatorEndpoint`."""

    def __init__(self, endpoint: CoordinatorEndpoint, limits: Limits) -> None:
        self._endpoint = endpoint
        self._limits = limits

    async def Join(  # noqa: N802 - gRPC method name
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinReply:
        """Register a client."""
        try:
            _reject_malformed(request)
            join = join_request_from_proto(request)
            # The certificate the TLS handshake verified (mutual TLS), never a claim on the wire.
            join = dataclasses.replace(join, peer_cert_sha256=_peer_cert_sha256(context))
            reply = await self._endpoint.join(join)
        except FlCoreError as exc:
            await _abort(context, exc, _who(request, "join of", "client_name"))
            raise  # pragma: no cover - abort raises
        return join_reply_to_proto(reply)

    async def PullTask(  # noqa: N802 - gRPC method name
        self, request: pb.PullTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TaskChunk | bytes]:
        """Long-poll for a task and stream it: a start message, then the blob in chunks."""
        try:
            _reject_malformed(request)
            if not math.isfinite(request.wait_seconds):
                raise CodecError(f"wait_seconds is {request.wait_seconds}, not a finite number")
            wait = min(max(request.wait_seconds, 0.0), MAX_LONG_POLL_S)
            if len(request.working_on) > MAX_TASK_ID:
                raise CodecError(f"working_on longer than {MAX_TASK_ID} characters")
            reply = await self._endpoint.pull_task(
                request.client_id, request.session_token, wait=wait, working_on=request.working_on
            )
        except FlCoreError as exc:
            await _abort(context, exc, _who(request, "pull from", "client_id"))
            return
        if isinstance(reply, Wait):
            yield pb.TaskChunk(wait=pb.Wait(retry_after_seconds=reply.retry_after))
            return
        if isinstance(reply, JobDone):
            yield pb.TaskChunk(done=pb.JobDone(status=reply.status, reason=reply.reason))
            return
        header, buffers, total = payload_to_proto(reply.payload)
        start = pb.TaskStart(header=header_to_proto(reply.header), payload=header, blob_bytes=total)
        if total <= self._limits.chunk_bytes:  # small: one message instead of two
            start.inline_blob = b"".join(buffers)
            yield pb.TaskChunk(start=start)
            return
        try:  # authenticates at once; entering cannot fail
            transfer = self._endpoint.transfer(request.client_id, request.session_token)
        except FlCoreError as exc:
            await _abort(context, exc, _who(request, "pull from", "client_id"))
            return
        with transfer:  # the client is live while its task's chunks are moving
            yield pb.TaskChunk(start=start)
            for parts in iter_chunk_parts(buffers, self._limits.chunk_bytes):
                yield encode_data_chunk(parts)  # the wire bytes of TaskChunk(data=...)

    async def PushResult(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[ChunkIn], context: grpc.aio.ServicerContext
    ) -> pb.PushResultReply:
        """Receive a result stream, check it against the limits, and hand it to the endpoint."""
        who = "result"
        try:
            received = await anext(aiter(request_iterator), None)
            first = None if received is None else _parsed(received)
            if not isinstance(first, pb.ResultChunk) or first.WhichOneof("kind") != "start":
                raise CodecError("a result stream must begin with a ResultStart message")
            start = first.start
            who = f"result from {start.client_id[:64]!r} for stage {start.header.stage[:64]!r}"
            # Before any buffer: the client must hold this task, with few uploads in flight.
            with self._endpoint.transfer(
                start.client_id, start.session_token, task_id=start.header.task_id
            ):
                await self._receive(start, request_iterator)
        except FlCoreError as exc:
            await _abort(context, exc, who)
        return pb.PushResultReply(accepted=True)

    async def _receive(
        self, start: pb.ResultStart, request_iterator: AsyncIterator[ChunkIn]
    ) -> None:
        """Assemble the rest of a result stream and hand the result to the endpoint."""
        payload = None
        if start.HasField("refusal"):
            if start.blob_bytes or len(start.payload.fields) or start.inline_blob:
                raise CodecError("a refusal carries no payload")
        else:
            expected = blob_size(start.payload, self._limits)
            if expected != start.blob_bytes:
                raise CodecError(
                    f"blob_bytes {start.blob_bytes} does not match the header ({expected})"
                )
            assembler = BlobAssembler(expected, self._limits)
            if start.inline_blob:
                assembler.add(start.inline_blob)
        async for received in request_iterator:
            chunk = _parsed(received)
            if isinstance(chunk, DataChunk):
                data: bytes | memoryview = chunk.data
            elif isinstance(chunk, pb.ResultChunk) and chunk.WhichOneof("kind") == "data":
                data = chunk.data
            else:
                raise CodecError("only data chunks may follow the ResultStart message")
            if start.HasField("refusal"):
                raise CodecError("a refusal carries no data")
            assembler.add(data)
        if not start.HasField("refusal"):
            payload = payload_from_proto(start.payload, assembler.finish(), self._limits)
        result = Result(
            client_id=start.client_id,
            session_token=start.session_token,
            header=header_from_proto(start.header),
            payload=payload,
            refusal=refusal_from_proto(start.refusal) if start.HasField("refusal") else None,
        )
        await self._endpoint.push_result(result)

    async def Leave(  # noqa: N802 - gRPC method name
        self, request: pb.LeaveRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaveReply:
        """Unregister a client."""
        try:
            _reject_malformed(request)
            await self._endpoint.leave(request.client_id, request.session_token)
        except FlCoreError as exc:
            await _abort(context, exc, _who(request, "leave of", "client_id"))
        return pb.LeaveReply()


@dataclass(frozen=True, slots=True)
class ServerHandle:
    """A started gRPC server and the port it listens on."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer | None = None

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting calls and finish (or cancel after ``grace`` seconds) the open ones."""
        if self.health is not None:  # load balancers and probes see it go first
            await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def serve(
    endpoint: CoordinatorEndpoint,
    *,
    address: str = "127.0.0.1:0",
    limits: Limits | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> ServerHandle:
    """Start a gRPC server for ``endpoint``.

    Args:
        endpoint: the coordinator.
        address: ``host:port``; port 0 picks a free one.
        limits: message limits (defaults to :class:`~fl_core.config.Limits`).
        credentials: TLS credentials; ``None`` listens in plaintext (loopback and tests only).

    Returns:
        The running server and its port.
    """
    limits = limits or Limits()
    server = grpc.aio.server(options=channel_options(limits))
    servicer = CoordinatorServicer(endpoint, limits)
    handlers = {
        "Join": grpc.unary_unary_rpc_method_handler(
            servicer.Join,
            request_deserializer=_safe(pb.JoinRequest),
            response_serializer=pb.JoinReply.SerializeToString,
        ),
        "PullTask": grpc.unary_stream_rpc_method_handler(
            servicer.PullTask,
            request_deserializer=_safe(pb.PullTaskRequest),
            response_serializer=serialize,
        ),
        "PushResult": grpc.stream_unary_rpc_method_handler(
            servicer.PushResult,
            request_deserializer=_safe_chunk(pb.ResultChunk),
            response_serializer=pb.PushResultReply.SerializeToString,
        ),
        "Leave": grpc.unary_unary_rpc_method_handler(
            servicer.Leave,
            request_deserializer=_safe(pb.LeaveRequest),
            response_serializer=pb.LeaveReply.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    # The standard gRPC health service (grpc.health.v1), for probes and load balancers.
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for name in ("", SERVICE):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    return ServerHandle(server, port, checker)
