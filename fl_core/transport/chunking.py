"""Split a payload's blob into chunks and put it back together, with limits checked first.

The receiver learns the blob's total size from the header, checks it against its limits, allocates
exactly that once, and copies each chunk into place; a chunk that overruns the declared size, too
many chunks, or a short blob is an error before any further allocation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ..config import Limits
from ..errors import CodecError, PayloadTooLarge


def iter_chunks(buffers: Iterable[memoryview], chunk_bytes: int) -> Iterator[bytes]:
    """Yield the concatenation of ``buffers`` in pieces of at most ``chunk_bytes`` bytes.

    Small buffers are packed together, so a payload of many small byte strings does not become
    many tiny messages.
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
                yield pending[0].tobytes() if len(pending) == 1 else b"".join(pending)
                pending, pending_len = [], 0
    if pending_len:
        yield pending[0].tobytes() if len(pending) == 1 else b"".join(pending)


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

    def add(self, data: bytes) -> None:
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
