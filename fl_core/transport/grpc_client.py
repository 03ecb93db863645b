"""The client's gRPC adapter: dial out, long-poll, push results in chunks. No protocol logic here.

Retries and re-joins are the client runtime's business (:mod:`fl_core.client.runtime`); this module
turns each call into one RPC and every failure into an fl_core error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from ..config import Limits
from ..errors import CodecError, FlCoreError
from ._pb import coordinator_pb2 as pb
from ._pb import coordinator_pb2_grpc as pb_grpc
from .base import ClientTransport, JobDone, JoinReply, JoinRequest, PullReply, Result, Task, Wait
from .chunking import (
    BlobAssembler,
    DataChunk,
    decode_data_chunk,
    encode_data_chunk,
    iter_chunk_parts,
)
from .errors import map_grpc_errors
from .grpc_server import MAX_TASK_ID, channel_options, serialize
from .serde import (
    blob_size,
    header_from_proto,
    header_to_proto,
    join_reply_from_proto,
    join_request_to_proto,
    payload_from_proto,
    payload_to_proto,
    refusal_to_proto,
)

log = logging.getLogger("bulwark.transport")

MIN_HOLD_S = 30.0
"""The shortest hold opened while a task downloads (a pull's own wait may be short)."""

DEFAULT_CALL_TIMEOUT_S = 30.0
"""Deadline of unary calls; pulls get their long-poll wait on top, pushes their own size budget."""


class GrpcClientTransport(ClientTransport):
    """A connection to a coordinator over gRPC.

    Args:
        target: ``host:port`` of the coordinator.
        limits: what this client accepts from the coordinator.
        credentials: TLS channel credentials; ``None`` for a plaintext channel (loopback only).
        call_timeout: deadline in seconds for join and leave.
    """

    def __init__(
        self,
        target: str,
        *,
        limits: Limits | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        self._limits = limits or Limits()
        options = channel_options(self._limits)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.CoordinatorStub(self._channel)
        # The chunked calls carry data chunks without protobuf's copies (see `chunking`).
        self._pull = self._channel.unary_stream(
            "/bulwark.v1.Coordinator/PullTask",
            request_serializer=pb.PullTaskRequest.SerializeToString,
            response_deserializer=_parse_task_chunk,
        )
        self._push = self._channel.stream_unary(
            "/bulwark.v1.Coordinator/PushResult",
            request_serializer=serialize,
            response_deserializer=pb.PushResultReply.FromString,
        )
        self._timeout = call_timeout
        self._holds: set[asyncio.Task[None]] = set()

    async def join(self, request: JoinRequest) -> JoinReply:
        """Join the coordinator's job."""
        with map_grpc_errors():
            reply = await self._stub.Join(join_request_to_proto(request), timeout=self._timeout)
        return join_reply_from_proto(reply)

    async def pull_task(
        self, client_id: str, session_token: str, *, wait: float, working_on: str = ""
    ) -> PullReply:
        """Long-poll for the next task and reassemble it from its chunks (or hold, see base)."""
        request = pb.PullTaskRequest(
            client_id=client_id,
            session_token=session_token,
            wait_seconds=wait,
            working_on=working_on,
        )
        with map_grpc_errors():
            call = self._pull(request, timeout=wait + self._timeout)
            first = await call.read()
            if first is grpc.aio.EOF:
                raise CodecError("the coordinator closed the task stream without a message")
            if not isinstance(first, pb.TaskChunk):
                raise CodecError("a task stream must begin with TaskStart, Wait or JobDone")
            kind = first.WhichOneof("kind")
            if kind == "wait":
                return Wait(max(0.0, first.wait.retry_after_seconds))
            if kind == "done":
                return JobDone(first.done.status, first.done.reason)
            if kind != "start":
                raise CodecError("a task stream must begin with TaskStart, Wait or JobDone")
            start = first.start
            expected = blob_size(start.payload, self._limits)
            if expected != start.blob_bytes:
                raise CodecError(f"blob_bytes {start.blob_bytes} does not match the header")
            assembler = BlobAssembler(expected, self._limits)
            if start.inline_blob:
                assembler.add(start.inline_blob)
            else:
                self._hold_while_downloading(client_id, session_token, start.header.task_id, wait)
            while True:
                chunk = await call.read()
                if chunk is grpc.aio.EOF:
                    break
                if not isinstance(chunk, DataChunk) and chunk.WhichOneof("kind") != "data":
                    raise CodecError("only data chunks may follow TaskStart")
                assembler.add(chunk.data)
        payload = payload_from_proto(start.payload, assembler.finish(), self._limits)
        return Task(header_from_proto(start.header), payload)

    def _hold_while_downloading(
        self, client_id: str, session_token: str, task_id: str, wait: float
    ) -> None:
        """Open a hold on a task as soon as its id is known, before its chunks are read.

        The coordinator has finished sending when the last chunks still sit in flow-control
        buffers on their way here; on a slow link reading them takes seconds, during which this
        client would otherwise have no open call and be taken for gone. The hold ends by itself
        when the task's result arrives (or after ``wait``); it is cancelled only by `close`.
        """
        if not task_id or len(task_id) > MAX_TASK_ID:
            return  # the runtime rejects the task; nothing to hold
        hold = asyncio.create_task(
            self._quiet_hold(client_id, session_token, task_id, max(wait, MIN_HOLD_S))
        )
        self._holds.add(hold)
        hold.add_done_callback(self._holds.discard)

    async def _quiet_hold(
        self, client_id: str, session_token: str, task_id: str, wait: float
    ) -> None:
        try:
            await self.pull_task(client_id, session_token, wait=wait, working_on=task_id)
        except FlCoreError as exc:  # the runtime's own hold and the stage deadline still apply
            log.debug("hold on task %s ended: %s", task_id[:12], exc)

    async def push_result(self, result: Result) -> None:
        """Send a result (or a refusal) as a stream of chunks."""
        start = pb.ResultStart(
            client_id=result.client_id,
            session_token=result.session_token,
            header=header_to_proto(result.header),
        )
        buffers: list[memoryview] = []
        if result.refusal is not None:
            start.refusal.CopyFrom(refusal_to_proto(result.refusal))
        elif result.payload is not None:
            header, buffers, total = payload_to_proto(result.payload)
            start.payload.CopyFrom(header)
            start.blob_bytes = total
            if total <= self._limits.chunk_bytes:  # small: one message instead of two
                start.inline_blob = b"".join(buffers)
                buffers = []
        chunk_bytes = self._limits.chunk_bytes

        async def stream() -> AsyncIterator[pb.ResultChunk | bytes]:
            yield pb.ResultChunk(start=start)
            for parts in iter_chunk_parts(buffers, chunk_bytes):
                yield encode_data_chunk(parts)  # the wire bytes of ResultChunk(data=...)

        # A generous deadline: time to move the bytes at 10 MB/s, plus the usual call timeout.
        budget = self._timeout + start.blob_bytes / 10e6
        with map_grpc_errors():
            await self._push(stream(), timeout=budget)

    async def leave(self, client_id: str, session_token: str) -> None:
        """Leave the job."""
        with map_grpc_errors():
            await self._stub.Leave(
                pb.LeaveRequest(client_id=client_id, session_token=session_token),
                timeout=self._timeout,
            )

    async def close(self) -> None:
        """Close the channel (and any hold still open)."""
        for hold in list(self._holds):
            hold.cancel()
        await self._channel.close()


def _parse_task_chunk(data: bytes) -> pb.TaskChunk | DataChunk:
    """A lone data field without protobuf's copies; any other message through protobuf."""
    return decode_data_chunk(data) or pb.TaskChunk.FromString(data)
