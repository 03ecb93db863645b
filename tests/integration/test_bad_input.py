"""Hostile and broken input over real loopback gRPC: each is rejected with a clear status, logged,
changes nothing, and the round goes on with everyone else."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import grpc
import numpy as np
import pytest
from support import (
    LinearTrainer,
    fedavg_oracle,
    job_text,
    make_clients,
    make_coordinator,
    parse,
    proven_join,
)

from fl_core.coordinator.store import Store
from fl_core.errors import CodecError, DuplicateResult, StaleResult, UnknownClient
from fl_core.payload import Payload
from fl_core.transport._pb import coordinator_pb2 as pb
from fl_core.transport._pb import coordinator_pb2_grpc as pb_grpc
from fl_core.transport.base import Result, Task
from fl_core.transport.chunking import encode_data_chunk
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve
from fl_core.transport.serde import header_to_proto, payload_to_proto

pytestmark = pytest.mark.integration

LIMITS = """
[limits]
chunk_bytes = 65536
max_payload_bytes = 1048576
[evaluation]
every = 0
"""


async def _mallory(port: int, job, dim: int, seen: dict) -> None:
    transport = GrpcClientTransport(f"127.0.0.1:{port}")
    join = await proven_join(transport, job, "mallory")
    cid, token = join.client_id, join.session_token
    task = None
    while not isinstance(task, Task):
        task = await transport.pull_task(cid, token, wait=5.0)
    header = task.header

    def result(payload: Payload, **over) -> Result:
        fields = {"client_id": cid, "session_token": token, "header": header, "payload": payload}
        fields.update(over)
        return Result(**fields)

    good = {"num_examples": 1, "metrics.loss": 0.0}
    cases = {
        "wrong dtype": (result(Payload(update=np.zeros(dim, np.float64), **good)), CodecError),
        "wrong shape": (result(Payload(update=np.zeros(dim + 1, np.float32), **good)), CodecError),
        "nan": (result(Payload(update=np.full(dim, np.nan, np.float32), **good)), CodecError),
        "inf": (result(Payload(update=np.full(dim, np.inf, np.float32), **good)), CodecError),
        "missing field": (result(Payload(update=np.zeros(dim, np.float32))), CodecError),
        "zero examples": (
            result(Payload(update=np.zeros(dim, np.float32), num_examples=0)),
            CodecError,
        ),
        "stale round": (
            result(
                Payload(update=np.zeros(dim, np.float32), **good),
                header=dataclasses.replace(header, round=7),
            ),
            StaleResult,
        ),
        "unknown client": (
            result(Payload(update=np.zeros(dim, np.float32), **good), client_id="nobody"),
            UnknownClient,
        ),
        "wrong token": (
            result(Payload(update=np.zeros(dim, np.float32), **good), session_token="0" * 32),
            UnknownClient,
        ),
    }
    for name, (bad, error) in cases.items():
        with pytest.raises(error) as info:
            await transport.push_result(bad)
        seen[name] = str(info.value)

    # Oversized: a header that announces more than the limit, sent on the raw stub.
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.CoordinatorStub(channel)
    start = pb.ResultStart(
        client_id=cid, session_token=token, header=header_to_proto(header), blob_bytes=8 << 20
    )
    field = start.payload.fields.add()
    field.name = "update"
    field.value.tensor.dtype = "float32"
    field.value.tensor.shape.extend([2 << 20])
    field.value.tensor.nbytes = 8 << 20

    async def oversized():
        yield pb.ResultChunk(start=start)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.PushResult(oversized())
    seen["oversized"] = (info.value.code(), info.value.details())

    # Malformed: bytes that are not a protobuf message at all.
    raw = channel.stream_unary(
        "/bulwark.v1.Coordinator/PushResult", request_serializer=None, response_deserializer=None
    )

    async def garbage():
        yield b"\xff\xff\xff\xff not protobuf"

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw(garbage())
    seen["malformed"] = (info.value.code(), info.value.details())

    # Data chunks travel in their bare wire form (tag 0x12, varint length, bytes): one first,
    # and one whose length claims more bytes than it holds after a proper start.
    async def data_first():
        yield encode_data_chunk([memoryview(b"\0" * 20)])

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw(data_first())
    seen["data first"] = (info.value.code(), info.value.details())

    small = pb.ResultStart(client_id=cid, session_token=token, header=header_to_proto(header))
    small.payload.CopyFrom(payload_to_proto(Payload(update=np.zeros(dim, np.float32)))[0])
    small.blob_bytes = dim * 4

    async def short_chunk():
        yield pb.ResultChunk(start=small).SerializeToString()
        yield b"\x12\x40" + b"\0" * (dim * 4)  # claims 64 bytes, holds 20

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw(short_chunk())
    seen["short chunk"] = (info.value.code(), info.value.details())
    await channel.close()

    # Finally an honest (zero) update is accepted, and sending it again is a duplicate.
    honest = result(Payload(update=np.zeros(dim, np.float32), num_examples=1))
    await transport.push_result(honest)
    with pytest.raises(DuplicateResult):
        await transport.push_result(honest)
    seen["accepted"] = True
    while True:  # wait for the end of the job, as a client would
        reply = await transport.pull_task(cid, token, wait=5.0)
        if not isinstance(reply, Task) and getattr(reply, "status", None):
            break
    await transport.close()


def test_bad_results_are_rejected_and_the_round_goes_on(tmp_path: Path) -> None:
    job = parse(job_text(rounds=1, clients=4, min_clients=4, quorum=0.75, timeout=15, extra=LIMITS))
    trainers = [LinearTrainer(i) for i in range(3)]
    store = Store(tmp_path / "s.db")
    coordinator = make_coordinator(job, store, trainers[0])
    clients = make_clients(job, trainers)
    seen: dict = {}

    async def main():
        handle = await serve(coordinator, address="127.0.0.1:0", limits=job.limits)
        transports = [GrpcClientTransport(f"127.0.0.1:{handle.port}") for _ in clients]
        try:
            results = await asyncio.gather(
                coordinator.run(),
                *(c.run(t) for c, t in zip(clients, transports, strict=True)),
                _mallory(handle.port, job, 5, seen),
            )
        finally:
            for t in transports:
                await t.close()
            await handle.stop()
        return results[0]

    done = asyncio.run(main())

    assert done.status == "completed", done.reason
    assert seen["accepted"] is True
    assert "dtype float64, expected float32" in seen["wrong dtype"]
    assert "shape (6,), expected (5,)" in seen["wrong shape"]
    assert "NaN or Inf" in seen["nan"] and "NaN or Inf" in seen["inf"]
    assert "'num_examples' is missing" in seen["missing field"]
    assert "round 7" in seen["stale round"] and "not current" in seen["stale round"]
    assert "not joined" in seen["unknown client"]
    assert "not current" in seen["wrong token"]
    assert seen["oversized"][0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exceed the payload limit of 1048576 bytes" in seen["oversized"][1]
    assert seen["malformed"][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed ResultChunk" in seen["malformed"][1]
    assert seen["data first"][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "must begin with a ResultStart" in seen["data first"][1]
    assert seen["short chunk"][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed ResultChunk" in seen["short chunk"][1]
    # Nothing the hostile client sent changed the aggregate: it is FedAvg of the three honest
    # updates and mallory's one accepted zero update (weight 1).
    honest = fedavg_oracle(trainers, 1)
    start = store.checkpoint(job.job.name, 0)
    weights = [t.examples for t in trainers]
    expected = start + (honest - start) * (sum(weights) / (sum(weights) + 1))
    np.testing.assert_allclose(store.checkpoint(job.job.name, 1), expected, atol=1e-6)
    rejected = store.events(job.job.name, "rejected")
    assert len(rejected) >= 6 and all(e["client"] == "mallory" for e in rejected)
    assert store.metrics(job.job.name)[0]["num_clients"] == 4
    store.close()
