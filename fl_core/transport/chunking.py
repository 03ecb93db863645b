"""Split a payload's blob into chunks and put it back together, with limits checked first.

The receiver learns the blob's total size from the header, checks it against its limits, allocates
exactly that once, and copies each chunk into place; a chunk that overruns the declared size, too
many chunks, or a short blob is an error before any further allocation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..config import Limits
from ..errors import CodecError, PayloadTooLarge


def iter_chunk_parts(buffers: Iterable[memoryview], chunk_bytes: int) -> Iterator[list[memoryview]]:
    """Yield the concatenation of ``buffers`` in pieces of at most ``chunk_bytes`` bytes.

    Each piece is a list of views into the buffers (nothing is copied). Small buffers are packed
    together, so a payload of many small byte strings does not become many tiny messages.
    """
    pending: list[memoryview] = []
    pending_len = 0
    for buf in buffers:
        view = buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf
        offset = 0
        while offset < view.nbytes:
            take = min(chunk_bytes - pending_len, view.nbytes - offset)
            pending.append(view[offset : offset + take])
            pending_len += take
            offset += take
            if pending_len == chunk_bytes:
                yield pending
                pending, pending_len = [], 0
    if pending_len:
        yield pending


def iter_chunks(buffers: Iterable[memoryview], chunk_bytes: int) -> Iterator[bytes]:
    """`iter_chunk_parts`, each piece joined into one bytes object."""
    for parts in iter_chunk_parts(buffers, chunk_bytes):
        yield b"".join(parts)


# --- data chunks on the wire ----------------------------------------------------------------------
#
# `TaskChunk` and `ResultChunk` carry a blob's bytes in field 2, `bytes data`. A message holding
# only that field is, in protobuf's encoding, the tag byte 0x12 (field 2, length-delimited), the
# length as a varint, then the bytes. Writing and reading exactly that form directly saves the
# copies a protobuf message costs (into the message, out of it, into the serialized string):
# megabytes per update, on both sides. Anything else still goes through protobuf.

DATA_TAG = 0x12
"""Field 2 (``data``), wire type 2 (length-delimited)."""

_MAX_VARINT_BYTES = 10


@dataclass(frozen=True, slots=True)
class DataChunk:
    """A received chunk message that held only its ``data`` field: a view of its bytes."""

    data: memoryview


def encode_data_chunk(parts: list[memoryview]) -> bytes:
    """The wire form of a chunk message whose only field is ``data`` = the joined ``parts``."""
    size = sum(p.nbytes for p in parts)
    head = bytearray([DATA_TAG])
    while True:
        byte, size = size & 0x7F, size >> 7
        head.append(byte | (0x80 if size else 0))
        if not size:
            break
    return b"".join([head, *parts])


def decode_data_chunk(raw: bytes) -> DataChunk | None:
    """Read a chunk message that is exactly one ``data`` field; ``None`` for any other message.

    ``None`` sends the bytes to the protobuf parser, which gives the same result for every
    message this accepts (a lone field 2 whose length is what remains) and handles the rest.
    """
    if len(raw) < 2 or raw[0] != DATA_TAG:
        return None
    length, shift, pos = 0, 0, 1
    while True:
        if pos >= len(raw) or pos > _MAX_VARINT_BYTES:
            return None
        byte = raw[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            break
        shift += 7
    if length != len(raw) - pos:
        return None
    return DataChunk(memoryview(raw)[pos:])


class BlobAssembler:
    """Collects the chunks of one blob into one buffer, allocated after the limits are checked."""

    __slots__ = ("_buffer", "_chunks", "_filled", "_limits", "_view")

    def __init__(self, expected_bytes: int, limits: Limits) -> None:
        if expected_bytes < 0:
            raise CodecError(f"negative blob size {expected_bytes}")
        if expected_bytes > limits.max_payload_bytes:
            raise PayloadTooLarge(
                f"payload of {expected_bytes} bytes exceeds the limit of "
                f"{limits.max_payload_bytes} bytes"
            )
        self._limits = limits
        # Uninitialised: every byte is written by `add` before `finish` hands the buffer out
        # (a zero-filled bytearray costs a third of a large transfer's time in page faults).
        self._buffer = np.empty(expected_bytes, dtype=np.uint8)
        self._view = self._buffer.data
        self._filled = 0
        self._chunks = 0

    @property
    def expected(self) -> int:
        """The declared total size."""
        return len(self._buffer)

    def add(self, data: bytes | memoryview) -> None:
        """Copy one chunk into place.

        Raises:
            PayloadTooLarge: the chunk is larger than the chunk limit, or there are too many.
            CodecError: the chunk runs past the declared size.
        """
        self._chunks += 1
        if self._chunks > self._limits.max_chunks:
            raise PayloadTooLarge(f"more than {self._limits.max_chunks} chunks")
        if len(data) > self._limits.chunk_bytes:
            raise PayloadTooLarge(
                f"chunk of {len(data)} bytes exceeds the chunk limit of {self._limits.chunk_bytes}"
            )
        end = self._filled + len(data)
        if end > len(self._buffer):
            raise CodecError(f"blob data runs past its declared size of {len(self._buffer)} bytes")
        self._view[self._filled : end] = data
        self._filled = end

    def finish(self) -> memoryview:
        """Return the whole blob.

        Raises:
            CodecError: when fewer bytes arrived than were declared.
        """
        if self._filled != len(self._buffer):
            raise CodecError(
                f"blob ended after {self._filled} of {len(self._buffer)} declared bytes"
            )
        return self._view
