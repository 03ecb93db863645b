"""Reader for IDX files, the format of MNIST and Fashion-MNIST (plain or gzip-compressed).

An IDX file is a 4-byte magic number ``00 00 <type code> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the array in C order as big-endian values of the coded type. See Y. LeCun,
C. Cortes and C. J. C. Burges, "The MNIST database of handwritten digits", section "File formats".

The files are untrusted input: the header is read and checked (magic, type code, number of
dimensions, each dimension, total size against ``max_bytes``) before the body is allocated, and the
body must have exactly the size that the header announces (no short read, no trailing bytes). For
a plain file the size is checked against the file length before anything is read; for a gzip file
the body is read with a bounded read of the announced size plus one byte, so a decompression bomb
is never inflated past ``max_bytes``.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fl_core.errors import CodecError

__all__ = ["DEFAULT_MAX_BYTES", "IDX_DTYPES", "MAX_NDIM", "read_idx"]

DEFAULT_MAX_BYTES = 1 << 30
"""Largest body (in bytes) :func:`read_idx` accepts unless told otherwise: 1 GiB."""

MAX_NDIM = 8
"""Largest number of dimensions accepted (the format allows 255; real data sets use at most 4)."""

IDX_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type codes and the big-endian numpy dtypes they denote."""

_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> npt.NDArray[np.generic]:
    """Read an IDX file into a numpy array in native byte order.

    Gzip compression is detected from the file's first two bytes, not from its name.

    Args:
        path: the file to read.
        max_bytes: largest body size, in bytes, that the header may announce.

    Returns:
        The array, with the shape of the header's dimensions and the native-endian version of the
        header's dtype (``uint8`` for MNIST images and labels).

    Raises:
        CodecError: the magic number, type code, number of dimensions or dimensions are invalid, the
            announced size exceeds ``max_bytes``, or the body is shorter or longer than announced
            (also for a truncated or corrupted gzip stream).
        FileNotFoundError: ``path`` does not exist.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    file_path = Path(path)
    with file_path.open("rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if compressed:
            try:
                with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                    return _read_stream(stream, name=str(file_path), max_bytes=max_bytes, size=None)
            except (OSError, EOFError, zlib.error) as exc:
                raise CodecError(f"{file_path}: corrupt gzip stream ({exc})") from exc
        size = os.fstat(raw.fileno()).st_size
        return _read_stream(raw, name=str(file_path), max_bytes=max_bytes, size=size)


def _read_stream(
    stream: io.BufferedIOBase, *, name: str, max_bytes: int, size: int | None
) -> npt.NDArray[np.generic]:
    """Parse and check the header, then read exactly the announced body.

    Args:
        stream: positioned at the first byte of the magic number.
        name: the file name, for error messages.
        max_bytes: largest announced body size accepted.
        size: the total length of the (uncompressed) file if known up front, else ``None``.
    """
    magic = _read_exact(stream, 4, name=name, what="magic number")
    if magic[0] != 0 or magic[1] != 0:
        raise CodecError(
            f"{name}: not an IDX file (magic number {magic.hex()} does not start with 0000)"
        )
    type_code, ndim = magic[2], magic[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02x}" for code in IDX_DTYPES)
        raise CodecError(f"{name}: unknown IDX type code 0x{type_code:02x} (known: {known})")
    if not 1 <= ndim <= MAX_NDIM:
        raise CodecError(f"{name}: IDX header has {ndim} dimensions, allowed 1..{MAX_NDIM}")
    dims = struct.unpack(f">{ndim}I", _read_exact(stream, 4 * ndim, name=name, what="dimensions"))
    dtype = IDX_DTYPES[type_code]
    body = dtype.itemsize
    for dim in dims:
        body *= dim  # Python ints: no overflow
    if body > max_bytes:
        raise CodecError(
            f"{name}: IDX header announces {body} bytes of data for shape {dims}, "
            f"more than max_bytes={max_bytes}"
        )
    header = 4 + 4 * ndim
    if size is not None and size != header + body:
        raise CodecError(
            f"{name}: file has {size} bytes, the IDX header (shape {dims}, dtype {dtype.str}) "
            f"needs exactly {header + body}"
        )
    buffer = np.empty(body, dtype=np.uint8)
    _read_into(stream, buffer, name=name, what=f"data for shape {dims}")
    if stream.read(1):
        raise CodecError(f"{name}: trailing bytes after the {body} bytes of data for shape {dims}")
    array = buffer.view(dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _read_into(
    stream: io.BufferedIOBase, buffer: npt.NDArray[np.uint8], *, name: str, what: str
) -> None:
    """Fill ``buffer`` from ``stream`` or raise a :class:`CodecError` if the stream ends first."""
    view = buffer.data
    filled = 0
    while filled < len(view):
        count = stream.readinto(view[filled:])
        if not count:
            raise CodecError(
                f"{name}: truncated IDX file: {what} needs {len(view)} bytes, got {filled}"
            )
        filled += count


def _read_exact(stream: io.BufferedIOBase, count: int, *, name: str, what: str) -> bytes:
    """Read exactly ``count`` bytes or raise a :class:`CodecError` saying what was short."""
    data = stream.read(count)
    if len(data) != count:
        raise CodecError(f"{name}: truncated IDX file: {what} needs {count} bytes, got {len(data)}")
    return data
