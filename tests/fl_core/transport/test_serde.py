from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl_core.config import Limits
from fl_core.errors import CodecError, PayloadTooLarge
from fl_core.payload import Payload
from fl_core.transport._pb import common_pb2
from fl_core.transport._pb import coordinator_pb2 as pb
from fl_core.transport.base import JoinReply, JoinRequest, Refusal, TaskHeader
from fl_core.transport.chunking import (
    BlobAssembler,
    decode_data_chunk,
    encode_data_chunk,
    iter_chunks,
)
from fl_core.transport.serde import (
    blob_size,
    header_from_proto,
    header_to_proto,
    join_reply_from_proto,
    join_reply_to_proto,
    join_request_from_proto,
    join_request_to_proto,
    payload_from_proto,
    payload_to_proto,
    refusal_from_proto,
    refusal_to_proto,
)

LIMITS = Limits(chunk_bytes=4096, max_payload_bytes=1 << 22)

names = st.text(alphabet="abcdefghij._", min_size=1, max_size=12)
values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.binary(max_size=300),
    st.booleans(),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=5).map(tuple),
    st.lists(st.binary(max_size=50), min_size=1, max_size=5).map(tuple),
    st.sampled_from(["float32", "uint32", "int64", "uint8"]).flatmap(
        lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=3, max_side=20))
    ),
)


def _wire(payload: Payload) -> Payload:
    msg, buffers, total = payload_to_proto(payload)
    wire = common_pb2.Payload.FromString(msg.SerializeToString())
    assembler = BlobAssembler(blob_size(wire, LIMITS), LIMITS)
    for chunk in iter_chunks(buffers, LIMITS.chunk_bytes):
        assembler.add(chunk)
    assert assembler.expected == total
    return payload_from_proto(wire, assembler.finish(), LIMITS)


@given(st.dictionaries(names, values, max_size=6))
def test_payload_roundtrip_is_identity(fields: dict) -> None:
    payload = Payload(fields)
    back = _wire(payload)
    assert list(back) == list(payload)
    for name in payload:
        a, b = payload[name], back[name]
        if isinstance(a, np.ndarray):
            assert isinstance(b, np.ndarray) and b.dtype == a.dtype and b.shape == a.shape
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b and type(a) is type(b)


@given(st.lists(st.binary(min_size=0, max_size=9000), max_size=8), st.integers(4096, 10000))
def test_chunks_concatenate_to_the_buffers(parts: list[bytes], size: int) -> None:
    chunks = list(iter_chunks([memoryview(p) for p in parts], size))
    assert b"".join(chunks) == b"".join(parts)
    assert all(0 < len(c) <= size for c in chunks)


def test_header_join_and_refusal_roundtrip() -> None:
    header = TaskHeader(job_id="j", round=3, attempt=2, stage="fit", task_id="t", deadline_unix=5.5)
    assert header_from_proto(header_to_proto(header)) == header
    request = JoinRequest(
        client_name="h1", identity_public_key=b"k" * 32, job_config_sha256="a" * 64
    )
    assert join_request_from_proto(join_request_to_proto(request)) == request
    proven = dataclasses.replace(request, challenge=b"c" * 32, proof=b"p" * 64)
    assert join_request_from_proto(join_request_to_proto(proven)) == proven
    # The certificate fingerprint is set by the server from the TLS handshake, never sent.
    claimed = dataclasses.replace(request, peer_cert_sha256="ab" * 32)
    assert join_request_from_proto(join_request_to_proto(claimed)).peer_cert_sha256 == ""
    for bad in [
        dataclasses.replace(request, challenge=b"short"),
        dataclasses.replace(request, proof=b"p" * 63),
    ]:
        with pytest.raises(CodecError):
            join_request_from_proto(join_request_to_proto(bad))
    reply = JoinReply(client_id="h1", session_token="s", job_id="j")
    assert join_reply_from_proto(join_reply_to_proto(reply)) == reply
    offer = JoinReply(
        client_id="",
        session_token="",
        job_id="j",
        challenge=b"c" * 32,
        coordinator_name="coord",
        coordinator_proof=b"s" * 64,
    )
    assert join_reply_from_proto(join_reply_to_proto(offer)) == offer
    refusal = Refusal("budget", "epsilon would exceed 3.0")
    assert refusal_from_proto(refusal_to_proto(refusal)) == refusal


def test_limits_are_checked_before_allocation() -> None:
    msg = common_pb2.Payload()
    field = msg.fields.add()
    field.name = "update"
    field.value.tensor.dtype = "float32"
    field.value.tensor.shape.extend([1 << 30])
    field.value.tensor.nbytes = 4 << 30
    with pytest.raises((PayloadTooLarge, CodecError)):
        blob_size(msg, LIMITS)
    with pytest.raises(PayloadTooLarge, match="exceeds the limit"):
        BlobAssembler(LIMITS.max_payload_bytes + 1, LIMITS)


def test_blob_overrun_and_short_blob_are_errors() -> None:
    assembler = BlobAssembler(10, LIMITS)
    assembler.add(b"x" * 6)
    with pytest.raises(CodecError, match="runs past"):
        assembler.add(b"y" * 6)
    short = BlobAssembler(10, LIMITS)
    short.add(b"x" * 4)
    with pytest.raises(CodecError, match="ended after 4 of 10"):
        short.finish()
    with pytest.raises(PayloadTooLarge, match="chunk limit"):
        BlobAssembler(10_000, LIMITS).add(b"z" * (LIMITS.chunk_bytes + 1))


def test_header_with_mismatched_tensor_length_is_rejected() -> None:
    msg, _, _ = payload_to_proto(Payload(update=np.zeros(4, np.float32)))
    msg.fields[0].value.tensor.nbytes = 12
    with pytest.raises(CodecError, match="do not match"):
        blob_size(msg, LIMITS)


@given(st.lists(st.binary(max_size=300), max_size=5))
def test_data_chunks_are_byte_for_byte_protobuf(parts: list[bytes]) -> None:
    joined = b"".join(parts)
    wire = encode_data_chunk([memoryview(p) for p in parts])
    assert wire == pb.TaskChunk(data=joined).SerializeToString()
    assert wire == pb.ResultChunk(data=joined).SerializeToString()
    chunk = decode_data_chunk(wire)
    assert chunk is not None and bytes(chunk.data) == joined


@given(st.binary(max_size=64))
def test_the_fast_path_reads_only_what_protobuf_reads_the_same_way(raw: bytes) -> None:
    chunk = decode_data_chunk(raw)
    if chunk is None:
        return  # left to protobuf, whatever it makes of it
    parsed = pb.ResultChunk.FromString(raw)
    assert parsed.WhichOneof("kind") == "data"
    assert parsed.data == bytes(chunk.data)


def test_a_data_chunk_with_a_wrong_length_is_left_to_protobuf() -> None:
    good = encode_data_chunk([memoryview(b"x" * 200)])
    assert decode_data_chunk(good[:-1]) is None  # truncated
    assert decode_data_chunk(good + b"\x08\x01") is None  # another field follows
    assert decode_data_chunk(b"\x12" + b"\xff" * 11) is None  # varint never ends
    assert decode_data_chunk(b"\x0a\x00") is None  # field 1, not data
