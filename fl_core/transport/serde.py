"""Paired ``*_to_proto`` / ``*_from_proto`` functions: the only protobuf code besides the adapters.

A payload becomes a header (:class:`Payload` proto: field names, scalars, and descriptions of every
byte-like value) plus a list of buffers, the blob, in field order. Decoding goes the other way and
checks every description against the limits before the blob is read.
"""

from __future__ import annotations

import math

import numpy as np

from ..codec import check_spec, dtype_name, from_le_bytes, to_le_bytes
from ..config import Limits
from ..errors import CodecError, PayloadTooLarge
from ..payload import Payload, Value
from ._pb import common_pb2, coordinator_pb2
from .base import CHALLENGE_BYTES, ROLES, JoinReply, JoinRequest, Refusal, TaskHeader

MAX_NAME = 256
MAX_STR = 1 << 16


def payload_to_proto(payload: Payload) -> tuple[common_pb2.Payload, list[memoryview], int]:
    """Return the header message, the blob's buffers in order, and the blob's total size."""
    msg = common_pb2.Payload()
    buffers: list[memoryview] = []
    total = 0
    for name, value in payload.items():
        field = msg.fields.add()
        field.name = name
        v = field.value
        if isinstance(value, bool):
            v.bool_value = value
        elif isinstance(value, int):
            v.int_value = value
        elif isinstance(value, float):
            v.float_value = value
        elif isinstance(value, str):
            v.str_value = value
        elif isinstance(value, bytes):
            v.bytes_length = len(value)
            buffers.append(memoryview(value))
            total += len(value)
        elif isinstance(value, np.ndarray):
            data = to_le_bytes(value)
            v.tensor.dtype = dtype_name(value)
            v.tensor.shape.extend(int(d) for d in value.shape)
            v.tensor.nbytes = data.nbytes
            buffers.append(data)
            total += data.nbytes
        elif value and isinstance(value[0], bytes):
            items = [b for b in value if isinstance(b, bytes)]
            v.bytes_list.lengths.extend(len(b) for b in items)
            for item in items:
                buffers.append(memoryview(item))
                total += len(item)
        else:
            v.ints.values.extend(int(x) for x in value)
            v.ints.SetInParent()
    return msg, buffers, total


def blob_size(msg: common_pb2.Payload, limits: Limits) -> int:
    """Check a received header against ``limits`` and return the blob size it describes.

    Raises:
        CodecError: a malformed field (bad name, dtype, shape, or an unset value).
        PayloadTooLarge: too many fields, or a blob larger than the limit.
    """
    if len(msg.fields) > limits.max_fields:
        raise PayloadTooLarge(f"{len(msg.fields)} fields exceed the limit of {limits.max_fields}")
    total = 0
    max_elements = limits.max_payload_bytes
    for field in msg.fields:
        name = field.name
        if not name or len(name) > MAX_NAME:
            raise CodecError(f"field name of length {len(name)} is not allowed (1..{MAX_NAME})")
        kind = field.value.WhichOneof("kind")
        if kind is None:
            raise CodecError(f"field {name!r} has no value")
        if kind == "bytes_length":
            total += field.value.bytes_length
        elif kind == "tensor":
            spec = field.value.tensor
            if total + spec.nbytes > limits.max_payload_bytes:
                raise PayloadTooLarge(
                    f"field {name!r}: {spec.nbytes} bytes exceed the payload limit of "
                    f"{limits.max_payload_bytes} bytes"
                )
            check_spec(
                dtype=spec.dtype,
                shape=list(spec.shape),
                nbytes=spec.nbytes,
                max_elements=max_elements,
                field=name,
            )
            total += spec.nbytes
        elif kind == "bytes_list":
            total += sum(field.value.bytes_list.lengths)
        elif kind == "str_value" and len(field.value.str_value) > MAX_STR:
            raise CodecError(f"field {name!r}: string longer than {MAX_STR} characters")
        if total > limits.max_payload_bytes:
            raise PayloadTooLarge(
                f"payload data exceeds the limit of {limits.max_payload_bytes} bytes"
            )
    return total


def payload_from_proto(msg: common_pb2.Payload, blob: memoryview, limits: Limits) -> Payload:
    """Rebuild a payload from its header and blob; ``blob_size`` must have accepted the header.

    Tensors are read-only views into ``blob``; byte strings are copied out of it.
    """
    if blob.nbytes != blob_size(msg, limits):
        raise CodecError(f"blob of {blob.nbytes} bytes does not match the header")
    fields: dict[str, Value] = {}
    offset = 0
    for field in msg.fields:
        name = field.name
        if name in fields:
            raise CodecError(f"field {name!r} appears twice")
        v = field.value
        kind = v.WhichOneof("kind")
        if kind == "int_value":
            fields[name] = int(v.int_value)
        elif kind == "float_value":
            if not math.isfinite(v.float_value):
                raise CodecError(f"field {name!r}: {v.float_value} is not finite")
            fields[name] = float(v.float_value)
        elif kind == "str_value":
            fields[name] = v.str_value
        elif kind == "bool_value":
            fields[name] = bool(v.bool_value)
        elif kind == "bytes_length":
            end = offset + v.bytes_length
            fields[name] = blob[offset:end].tobytes()
            offset = end
        elif kind == "tensor":
            end = offset + v.tensor.nbytes
            fields[name] = from_le_bytes(
                blob[offset:end], dtype=v.tensor.dtype, shape=v.tensor.shape
            )
            offset = end
        elif kind == "bytes_list":
            items = []
            for length in v.bytes_list.lengths:
                items.append(blob[offset : offset + length].tobytes())
                offset += length
            fields[name] = tuple(items)
        else:  # ints
            fields[name] = tuple(int(x) for x in v.ints.values)
    return Payload(fields)


def header_to_proto(header: TaskHeader) -> common_pb2.TaskHeader:
    """Domain task header to its message."""
    return common_pb2.TaskHeader(
        job_id=header.job_id,
        round=header.round,
        attempt=header.attempt,
        stage=header.stage,
        task_id=header.task_id,
        deadline_unix=header.deadline_unix,
    )


def header_from_proto(msg: common_pb2.TaskHeader) -> TaskHeader:
    """Task header message to the domain type, with length checks."""
    for name in ("job_id", "stage", "task_id"):
        if len(getattr(msg, name)) > MAX_NAME:
            raise CodecError(f"task header {name} longer than {MAX_NAME} characters")
    return TaskHeader(
        job_id=msg.job_id,
        round=int(msg.round),
        attempt=int(msg.attempt),
        stage=msg.stage,
        task_id=msg.task_id,
        deadline_unix=float(msg.deadline_unix),
    )


def refusal_to_proto(refusal: Refusal) -> common_pb2.Refusal:
    """Domain refusal to its message."""
    return common_pb2.Refusal(code=refusal.code, reason=refusal.reason)


def refusal_from_proto(msg: common_pb2.Refusal) -> Refusal:
    """Refusal message to the domain type (reason truncated to a sane length)."""
    return Refusal(code=msg.code[:64], reason=msg.reason[:4096])


def join_request_to_proto(request: JoinRequest) -> coordinator_pb2.JoinRequest:
    """Domain join request to its message."""
    return coordinator_pb2.JoinRequest(
        client_name=request.client_name,
        identity_public_key=request.identity_public_key,
        job_config_sha256=request.job_config_sha256,
        protocol_version=request.protocol_version,
        role=request.role,
        challenge=request.challenge,
        proof=request.proof,
    )


def join_request_from_proto(msg: coordinator_pb2.JoinRequest) -> JoinRequest:
    """Join request message to the domain type, with length checks."""
    if not msg.client_name or len(msg.client_name) > MAX_NAME:
        raise CodecError(f"client_name must have 1..{MAX_NAME} characters")
    if len(msg.identity_public_key) not in (0, 32):
        raise CodecError("identity_public_key must be a raw 32-byte Ed25519 key")
    if len(msg.job_config_sha256) != 64:
        raise CodecError("job_config_sha256 must be 64 hex characters")
    role = msg.role or "owner"
    if role not in ROLES:
        raise CodecError(f"role {role[:32]!r} is not one of {list(ROLES)}")
    if len(msg.challenge) not in (0, CHALLENGE_BYTES):
        raise CodecError(f"challenge must be empty or {CHALLENGE_BYTES} bytes")
    if len(msg.proof) not in (0, 64):
        raise CodecError("proof must be empty or a 64-byte Ed25519 signature")
    return JoinRequest(
        client_name=msg.client_name,
        identity_public_key=bytes(msg.identity_public_key),
        job_config_sha256=msg.job_config_sha256,
        protocol_version=int(msg.protocol_version),
        role=role,
        challenge=bytes(msg.challenge),
        proof=bytes(msg.proof),
    )


def join_reply_to_proto(reply: JoinReply) -> coordinator_pb2.JoinReply:
    """Domain join reply to its message."""
    return coordinator_pb2.JoinReply(
        client_id=reply.client_id,
        session_token=reply.session_token,
        job_id=reply.job_id,
        challenge=reply.challenge,
        coordinator_name=reply.coordinator_name,
        coordinator_proof=reply.coordinator_proof,
    )


def join_reply_from_proto(msg: coordinator_pb2.JoinReply) -> JoinReply:
    """Join reply message to the domain type, with length checks."""
    if len(msg.challenge) not in (0, CHALLENGE_BYTES):
        raise CodecError(f"challenge must be empty or {CHALLENGE_BYTES} bytes")
    if len(msg.coordinator_proof) not in (0, 64):
        raise CodecError("coordinator_proof must be empty or a 64-byte Ed25519 signature")
    if len(msg.coordinator_name) > MAX_NAME:
        raise CodecError(f"coordinator_name must have at most {MAX_NAME} characters")
    return JoinReply(
        client_id=msg.client_id[:MAX_NAME],
        session_token=msg.session_token[:256],
        job_id=msg.job_id[:MAX_NAME],
        challenge=bytes(msg.challenge),
        coordinator_name=msg.coordinator_name,
        coordinator_proof=bytes(msg.coordinator_proof),
    )
