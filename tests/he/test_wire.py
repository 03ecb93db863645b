from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from he import _wire
from he.errors import DecodeError

headers = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=20), st.booleans(), st.none()),
    max_size=5,
)


@given(
    kind=st.sampled_from(list(_wire.Kind)),
    header=headers,
    blobs=st.lists(st.binary(max_size=200), max_size=5),
)
def test_round_trip_is_identity(kind: _wire.Kind, header: dict, blobs: list[bytes]) -> None:
    # Execute
    data = _wire.encode(kind, header, blobs)
    env = _wire.decode(data, max_bytes=len(data), max_blobs=5, max_blob_bytes=200, what="t")

    # Assert
    assert env.kind is kind
    assert env.header == header
    assert list(env.blobs) == blobs


@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        _wire.decode(data, max_bytes=1000, max_blobs=4, max_blob_bytes=1000, what="t")
    except DecodeError:
        pass


@given(cut=st.integers(0, 60))
def test_every_truncation_is_refused(cut: int) -> None:
    data = _wire.encode(_wire.Kind.CONTRIBUTION, {"a": 1}, [b"x" * 20, b"y" * 10])
    if cut >= len(data):
        return
    with pytest.raises(DecodeError):
        _wire.decode(data[:cut], max_bytes=1000, max_blobs=4, max_blob_bytes=1000, what="t")


def test_forged_blob_length_is_refused_before_allocation() -> None:
    # Prepare: a blob claiming 2^60 bytes
    data = bytearray(_wire.encode(_wire.Kind.AGGREGATE, {}, [b"abc"]))
    data[-11:-3] = (2**60).to_bytes(8, "little")

    # Execute / Assert
    with pytest.raises(DecodeError, match="exceeds 1000"):
        _wire.decode(bytes(data), max_bytes=1000, max_blobs=4, max_blob_bytes=1000, what="t")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"XXXX" + d[4:], "magic"),
        (lambda d: d[:4] + b"\x09" + d[5:], "format version 9"),
        (lambda d: d[:5] + b"\x63" + d[6:], "unknown kind 99"),
        (lambda d: d + b"\x00", "trailing"),
    ],
)
def test_header_fields_are_checked(mutate, message: str) -> None:
    data = _wire.encode(_wire.Kind.RELEASE, {"k": "v"}, [b"1"])
    with pytest.raises(DecodeError, match=message):
        _wire.decode(mutate(data), max_bytes=1000, max_blobs=4, max_blob_bytes=100, what="t")


def test_non_finite_json_is_refused() -> None:
    body = b'{"x": NaN}'
    data = _wire._PREFIX.pack(_wire.MAGIC, 1, 1, len(body)) + body + (0).to_bytes(4, "little")
    with pytest.raises(DecodeError, match="non-finite"):
        _wire.decode(data, max_bytes=1000, max_blobs=1, max_blob_bytes=10, what="t")


def test_too_many_blobs_is_refused() -> None:
    data = _wire.encode(_wire.Kind.RELEASE, {}, [b""] * 5)
    with pytest.raises(DecodeError, match="at most 4 allowed"):
        _wire.decode(data, max_bytes=1000, max_blobs=4, max_blob_bytes=10, what="t")


def test_digest_separates_blob_boundaries() -> None:
    assert _wire.digest_blobs([b"ab", b"c"]) != _wire.digest_blobs([b"a", b"bc"])


@given(
    st.lists(st.binary(max_size=200), max_size=6),
    st.dictionaries(st.text(max_size=5), st.integers()),
)
def test_the_blob_section_digest_is_the_digest_of_the_blobs(
    blobs: list[bytes], header: dict
) -> None:
    data = _wire.encode(_wire.Kind.CONTRIBUTION, header, blobs)
    env = _wire.decode(data, max_bytes=1 << 20, max_blobs=8, max_blob_bytes=1 << 10, what="t")
    assert env.blobs == tuple(blobs)
    assert _wire.digest_section(env.blob_section) == _wire.digest_blobs(blobs)
