"""Bytes that do not parse, and requests with impossible values, get INVALID_ARGUMENT over real
gRPC (the error path used to read fields of the unparsed request and answer UNKNOWN)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import grpc
import pytest
from support import LinearTrainer, job_text, make_coordinator, parse, proven_join

from fl_core.codec import check_spec
from fl_core.coordinator.store import Store
from fl_core.errors import CodecError
from fl_core.transport._pb import common_pb2
from fl_core.transport._pb import coordinator_pb2 as pb
from fl_core.transport.base import Task
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve
from fl_core.transport.serde import header_to_proto

pytestmark = pytest.mark.integration


def test_malformed_requests_get_invalid_argument(tmp_path: Path) -> None:
    job = parse(job_text(clients=2, min_clients=2))
    coordinator = make_coordinator(job, Store(tmp_path / "s.db"), LinearTrainer(0))

    async def main() -> dict[str, tuple[grpc.StatusCode, str]]:
        handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}")
        seen: dict[str, tuple[grpc.StatusCode, str]] = {}
        garbage = b"\xff\xff\xff\xff not protobuf"
        try:
            for method in ("Join", "Leave"):
                call = channel.unary_unary(f"/bulwark.v1.Coordinator/{method}")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(garbage)
                seen[method] = (info.value.code(), info.value.details() or "")
            pull = channel.unary_stream("/bulwark.v1.Coordinator/PullTask")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in pull(garbage):
                    pass
            seen["PullTask"] = (info.value.code(), info.value.details() or "")
            nan = pb.PullTaskRequest(client_id="c", session_token="t", wait_seconds=math.nan)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in pull(nan.SerializeToString()):
                    pass
            seen["nan wait"] = (info.value.code(), info.value.details() or "")
        finally:
            await channel.close()
            await handle.stop()
        return seen

    seen = asyncio.run(main())
    for name, (code, details) in seen.items():
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code, details)
    assert "malformed JoinRequest" in seen["Join"][1]
    assert "wait_seconds" in seen["nan wait"][1]


def test_a_zero_dimension_beside_a_huge_one_is_refused() -> None:
    with pytest.raises(CodecError, match="dimension 4611686018427387904"):
        check_spec(
            dtype="float32", shape=(0, 2**62), nbytes=0, max_elements=1 << 24, field="update"
        )


def test_uploads_only_for_an_open_task_and_few_at_once(tmp_path: Path) -> None:
    """A result stream is refused before its buffer exists unless the client holds that task,
    and one client may have at most MAX_UPLOADS result streams in flight."""
    job = parse(job_text(clients=1, min_clients=1, rounds=1))
    coordinator = make_coordinator(job, Store(tmp_path / "s.db"), LinearTrainer(0))

    async def main() -> dict[str, tuple[grpc.StatusCode, str]]:
        handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
        run = asyncio.create_task(coordinator.run())
        target = f"127.0.0.1:{handle.port}"
        transport = GrpcClientTransport(target)
        channel = grpc.aio.insecure_channel(target)
        push = channel.stream_unary("/bulwark.v1.Coordinator/PushResult")
        seen: dict[str, tuple[grpc.StatusCode, str]] = {}
        hang = asyncio.Event()

        def start(task_id: str, header: common_pb2.TaskHeader | None = None) -> bytes:
            msg = pb.ResultChunk(
                start=pb.ResultStart(
                    client_id=join.client_id,
                    session_token=join.session_token,
                    header=header or common_pb2.TaskHeader(task_id=task_id),
                    refusal=common_pb2.Refusal(code="x", reason="y"),
                )
            )
            return msg.SerializeToString()

        async def stream(first: bytes):  # type: ignore[no-untyped-def]
            yield first
            await hang.wait()

        try:
            join = await proven_join(transport, job, "mallory")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await push(stream(start("no-such-task")))
            seen["no task"] = (info.value.code(), info.value.details() or "")
            task = None
            while not isinstance(task, Task):
                task = await transport.pull_task(join.client_id, join.session_token, wait=5.0)
            header = header_to_proto(task.header)
            held = [asyncio.ensure_future(push(stream(start("", header)))) for _ in range(2)]
            await asyncio.sleep(0.5)  # both streams are open and waiting
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await push(stream(start("", header)))
            seen["third"] = (info.value.code(), info.value.details() or "")
            hang.set()
            await asyncio.gather(*held, return_exceptions=True)
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            await transport.close()
            await channel.close()
            await handle.stop()
        return seen

    seen = asyncio.run(main())
    assert seen["no task"][0] == grpc.StatusCode.FAILED_PRECONDITION
    assert "holds no open task" in seen["no task"][1]
    assert seen["third"][0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "uploads in flight" in seen["third"][1]
