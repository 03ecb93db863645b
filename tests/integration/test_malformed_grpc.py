"""Bytes that do not parse, and requests with impossible values, get INVALID_ARGUMENT over real
gRPC (the error path used to read fields of the unparsed request and answer UNKNOWN)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import grpc
import pytest
from support import LinearTrainer, job_text, make_coordinator, parse

from fl_core.codec import check_spec
from fl_core.coordinator.store import Store
from fl_core.errors import CodecError
from fl_core.transport._pb import coordinator_pb2 as pb
from fl_core.transport.grpc_server import serve

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
