"""The one byte format of everything in he that crosses a process boundary.

Layout (little-endian)::

    magic  b"BWHE"        4 bytes
    version                1 byte   (1)
    kind                   1 byte   (Kind)
    header length          4 bytes  (at most MAX_HEADER_BYTES)
    header                 UTF-8 JSON object (no NaN/Infinity)
    blob count             4 bytes  (at most the caller's max_blobs)
    blobs                  each: 8-byte length, then that many bytes

Every length is checked against the bytes that remain *before* anything is sliced or allocated, so
a forged length cannot make the decoder allocate more than its input. JSON is parsed with
`json.loads` only (never pickle or eval) and NaN/Infinity are refused.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from he.errors import DecodeError

MAGIC = b"BWHE"
VERSION = 1
MAX_HEADER_BYTES = 16 * 1024 * 1024
_PREFIX = struct.Struct("<4sBBI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class Kind(IntEnum):
    """What an envelope holds; the key holder decrypts only sums of a REQUEST's contributions."""

    PUBLIC_CONTEXT = 1
    CONTRIBUTION = 2
    AGGREGATE = 3
    RELEASE = 4
    REQUEST = 5


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope: its kind, JSON header and binary blobs."""

    kind: Kind
    header: dict[str, Any]
    blobs: tuple[bytes, ...]
    blob_section: memoryview | bytes = b""
    """The blobs as they lie in the envelope, each after its length: what `digest_blobs`
    hashes, so `digest_section` gives the same digest in one pass over one buffer."""


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces, no NaN) used for signing and digests."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:
        raise DecodeError(f"value cannot be encoded as canonical JSON: {exc}") from exc


def digest_blobs(blobs: tuple[bytes, ...] | list[bytes]) -> str:
    """SHA-256 over the blobs with their lengths (hex), so concatenations cannot collide."""
    h = hashlib.sha256()
    for blob in blobs:
        h.update(_U64.pack(len(blob)))
        h.update(blob)
    return h.hexdigest()


def digest_section(section: memoryview | bytes) -> str:
    """`digest_blobs` of a decoded envelope's blobs, from its `Envelope.blob_section`."""
    return hashlib.sha256(section).hexdigest()


def encode(kind: Kind, header: dict[str, Any], blobs: tuple[bytes, ...] | list[bytes]) -> bytes:
    """Serialize one envelope."""
    head = canonical_json(header)
    if len(head) > MAX_HEADER_BYTES:
        raise DecodeError(f"header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    parts = [_PREFIX.pack(MAGIC, VERSION, int(kind), len(head)), head, _U32.pack(len(blobs))]
    for blob in blobs:
        parts.append(_U64.pack(len(blob)))
        parts.append(blob)
    return b"".join(parts)


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"header holds the non-finite number {name}")


def decode(
    data: bytes, *, max_bytes: int, max_blobs: int, max_blob_bytes: int, what: str
) -> Envelope:
    """Parse an envelope, checking every length before slicing.

    Args:
        data: the bytes received.
        max_bytes: refuse inputs longer than this.
        max_blobs: refuse more blobs than this.
        max_blob_bytes: refuse any blob longer than this.
        what: a noun for error messages ("public context", "contribution", ...).

    Raises:
        DecodeError: naming the field that is wrong.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what} must be bytes, got {type(data).__name__}")
    view = memoryview(data)
    if len(view) > max_bytes:
        raise DecodeError(f"{what} of {len(view)} bytes exceeds the limit of {max_bytes}")
    if len(view) < _PREFIX.size + _U32.size:
        raise DecodeError(f"{what} is truncated ({len(view)} bytes)")
    magic, version, kind_byte, head_len = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise DecodeError(f"{what} does not start with the he magic bytes")
    if version != VERSION:
        raise DecodeError(f"{what} has format version {version}; only {VERSION} is understood")
    try:
        kind = Kind(kind_byte)
    except ValueError as exc:
        raise DecodeError(f"{what} has unknown kind {kind_byte}") from exc
    pos = _PREFIX.size
    if head_len > MAX_HEADER_BYTES or head_len > len(view) - pos - _U32.size:
        raise DecodeError(f"{what} header length {head_len} exceeds the bytes present")
    try:
        header = json.loads(
            bytes(view[pos : pos + head_len]).decode("utf-8"), parse_constant=_reject_constant
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"{what} header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise DecodeError(f"{what} header must be a JSON object")
    pos += head_len
    (count,) = _U32.unpack_from(view, pos)
    pos += _U32.size
    if count > max_blobs:
        raise DecodeError(f"{what} has {count} blobs; at most {max_blobs} allowed")
    section_start = pos
    blobs: list[bytes] = []
    for index in range(count):
        if len(view) - pos < _U64.size:
            raise DecodeError(f"{what} is truncated before blob {index}")
        (size,) = _U64.unpack_from(view, pos)
        pos += _U64.size
        if size > max_blob_bytes:
            raise DecodeError(f"{what} blob {index} of {size} bytes exceeds {max_blob_bytes}")
        if size > len(view) - pos:
            raise DecodeError(f"{what} blob {index} claims {size} bytes; fewer remain")
        blobs.append(bytes(view[pos : pos + size]))
        pos += size
    if pos != len(view):
        raise DecodeError(f"{what} has {len(view) - pos} trailing bytes")
    return Envelope(kind=kind, header=header, blobs=tuple(blobs), blob_section=view[section_start:])


def get_str(header: dict[str, Any], key: str, *, what: str, max_len: int = 256) -> str:
    """A required string field."""
    value = header.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise DecodeError(f"{what} field {key!r} must be a string of 1..{max_len} characters")
    return value


def get_int(header: dict[str, Any], key: str, *, what: str, low: int, high: int) -> int:
    """A required integer field within [low, high]."""
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise DecodeError(f"{what} field {key!r} must be an integer in [{low}, {high}]")
    return value


def get_float(header: dict[str, Any], key: str, *, what: str) -> float:
    """A required finite non-negative number."""
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise DecodeError(f"{what} field {key!r} must be a non-negative number")
    return float(value)


def get_dict(header: dict[str, Any], key: str, *, what: str) -> dict[str, Any]:
    """A required JSON object field."""
    value = header.get(key)
    if not isinstance(value, dict):
        raise DecodeError(f"{what} field {key!r} must be an object")
    return value


def get_list(header: dict[str, Any], key: str, *, what: str, max_len: int) -> list[Any]:
    """A required JSON array field of bounded length."""
    value = header.get(key)
    if not isinstance(value, list) or len(value) > max_len:
        raise DecodeError(f"{what} field {key!r} must be a list of at most {max_len} items")
    return value
