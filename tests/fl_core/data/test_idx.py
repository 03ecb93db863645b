from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl_core.data.idx import IDX_DTYPES, MAX_NDIM, read_idx
from fl_core.errors import CodecError

FASHION = Path("/usr/share/datasets/fashion-mnist")
CODE_OF = {dtype.str: code for code, dtype in IDX_DTYPES.items()}


def encode_idx(array: np.ndarray) -> bytes:
    """A straightforward IDX encoder, written from the format description (the test oracle)."""
    big = array.astype(array.dtype.newbyteorder(">"))
    code = CODE_OF[big.dtype.str]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big.tobytes()


def write(tmp_path: Path, data: bytes, *, compress: bool, name: str = "a.idx") -> Path:
    path = tmp_path / (name + (".gz" if compress else ""))
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


NATIVE_DTYPES = [np.dtype(d) for d in ("u1", "i1", ">i2", ">i4", ">f4", ">f8")]


@given(
    array=st.sampled_from(NATIVE_DTYPES).flatmap(
        lambda dt: hnp.arrays(
            dtype=dt.newbyteorder("="),
            shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
            elements={"allow_nan": False} if dt.kind == "f" else None,
        )
    ),
    compress=st.booleans(),
)
def test_round_trip_every_dtype_and_shape(tmp_path_factory, array, compress):
    # Prepare
    path = write(tmp_path_factory.mktemp("idx"), encode_idx(array), compress=compress)
    # Execute
    out = read_idx(path)
    # Assert
    assert out.shape == array.shape
    assert out.dtype == array.dtype.newbyteorder("=")
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable


@pytest.mark.parametrize("compress", [False, True])
def test_big_endian_values_are_decoded(tmp_path, compress):
    data = bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + struct.pack(">hh", -2, 513)
    out = read_idx(write(tmp_path, data, compress=compress))
    assert out.dtype == np.int16
    assert out.tolist() == [-2, 513]


def header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


CORRUPT = {
    "bad magic": (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
    "unknown type": (header(0x0A, (1,)) + b"\x00", "unknown IDX type code 0x0a"),
    "zero dims": (bytes([0, 0, 8, 0]), "0 dimensions"),
    "too many dims": (header(8, (1,) * (MAX_NDIM + 1)) + b"\x00", f"{MAX_NDIM + 1} dimensions"),
    "short magic": (b"\x00\x00", "magic number needs 4 bytes, got 2"),
    "short dims": (bytes([0, 0, 8, 3]) + struct.pack(">I", 2), "dimensions needs 12 bytes"),
    "short body": (header(8, (2, 3)) + b"\x00" * 5, "needs"),
    "trailing": (header(8, (2, 3)) + b"\x00" * 7, None),
    "huge": (header(0x0E, (0xFFFFFFFF, 0xFFFFFFFF)), "max_bytes"),
}


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_files_raise_codec_error_naming_the_problem(tmp_path, case, compress):
    # Prepare
    data, message = CORRUPT[case]
    path = write(tmp_path, data, compress=compress)
    # Execute / Assert
    with pytest.raises(CodecError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    if message is not None:
        assert message in str(info.value)
    if case == "trailing":  # plain files are caught by the length check, gzip by the bounded read
        assert ("trailing" in str(info.value)) or ("needs exactly" in str(info.value))


def test_max_bytes_is_checked_before_the_body_is_read(tmp_path):
    path = write(tmp_path, header(8, (10, 10)) + b"\x00" * 100, compress=True)
    with pytest.raises(CodecError, match="announces 100 bytes.*max_bytes=99"):
        read_idx(path, max_bytes=99)
    assert read_idx(path, max_bytes=100).shape == (10, 10)


def test_gzip_bomb_is_not_inflated_past_the_announced_size(tmp_path):
    # Prepare: 10 announced bytes followed by 50 MiB of zeros (compresses to about 50 KiB).
    compressed = gzip.compress(header(8, (10,)) + bytes(50 << 20), compresslevel=9)
    path = tmp_path / "bomb.gz"
    path.write_bytes(compressed)
    # Execute / Assert
    with pytest.raises(CodecError, match="trailing bytes"):
        read_idx(path)


def test_corrupt_gzip_stream_raises_codec_error(tmp_path):
    good = gzip.compress(header(8, (64,)) + bytes(range(64)))
    broken = good[:12] + bytes(b ^ 0xFF for b in good[12:-8]) + good[-8:]
    path = tmp_path / "broken.gz"
    path.write_bytes(broken)
    with pytest.raises(CodecError, match="corrupt gzip|truncated|trailing|needs exactly"):
        read_idx(path)


def test_truncated_gzip_stream_raises_codec_error(tmp_path):
    good = gzip.compress(header(8, (4096,)) + bytes(4096))
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CodecError):
        read_idx(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.idx")


def test_negative_max_bytes_is_rejected(tmp_path):
    path = write(tmp_path, header(8, (1,)) + b"\x00", compress=False)
    with pytest.raises(ValueError, match="max_bytes"):
        read_idx(path, max_bytes=-1)


@pytest.mark.skipif(
    not (FASHION / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed (scripts/setup --data)",
)
def test_reads_the_real_fashion_mnist_test_labels():
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    assert labels.dtype == np.uint8
    assert labels.shape == (10_000,)
    assert np.bincount(labels).tolist() == [1000] * 10
