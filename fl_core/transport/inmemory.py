"""In-process transport: clients call the coordinator's endpoint directly.

It runs exactly the protocol code that gRPC runs, without sockets, so one machine can simulate
thousands of clients. With ``roundtrip=True`` every payload also goes through the wire codec
(encode, then decode with the limits), which exercises serialisation without a network.
"""

from __future__ import annotations

from ..config import Limits
from ..errors import CodecError
from ..payload import Payload
from .base import (
    ClientTransport,
    CoordinatorEndpoint,
    JoinReply,
    JoinRequest,
    PullReply,
    Result,
    Task,
)
from .serde import blob_size, payload_from_proto, payload_to_proto


def _roundtrip(payload: Payload, limits: Limits) -> Payload:
    msg, buffers, total = payload_to_proto(payload)
    wire = type(msg).FromString(msg.SerializeToString())
    blob = bytearray(blob_size(wire, limits))
    offset = 0
    for buf in buffers:
        blob[offset : offset + buf.nbytes] = buf
        offset += buf.nbytes
    if offset != total:
        raise CodecError(f"encoder wrote {offset} blob bytes but described {total}")
    return payload_from_proto(wire, memoryview(blob), limits)


class InMemoryTransport(ClientTransport):
    """A client's connection to a coordinator in the same process."""

    def __init__(
        self,
        endpoint: CoordinatorEndpoint,
        *,
        roundtrip: bool = False,
        limits: Limits | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._roundtrip = roundtrip
        self._limits = limits or Limits()

    async def join(self, request: JoinRequest) -> JoinReply:
        """Forward a join."""
        return await self._endpoint.join(request)

    async def pull_task(
        self, client_id: str, session_token: str, *, wait: float, working_on: str = ""
    ) -> PullReply:
        """Forward a pull; with ``roundtrip`` the task's payload passes through the codec."""
        reply = await self._endpoint.pull_task(
            client_id, session_token, wait=wait, working_on=working_on
        )
        if self._roundtrip and isinstance(reply, Task):
            reply = Task(reply.header, _roundtrip(reply.payload, self._limits))
        return reply

    async def push_result(self, result: Result) -> None:
        """Forward a result; with ``roundtrip`` its payload passes through the codec."""
        if self._roundtrip and result.payload is not None:
            result = Result(
                client_id=result.client_id,
                session_token=result.session_token,
                header=result.header,
                payload=_roundtrip(result.payload, self._limits),
                refusal=result.refusal,
            )
        await self._endpoint.push_result(result)

    async def leave(self, client_id: str, session_token: str) -> None:
        """Forward a leave."""
        await self._endpoint.leave(client_id, session_token)

    async def close(self) -> None:
        """Nothing to release."""
