from __future__ import annotations

import numpy as np
import pytest

from fl_core.errors import CodecError
from fl_core.payload import Payload, prefixed


def test_typed_getters_check_type_and_range() -> None:
    p = Payload(n=3, x=0.5, s="sgd", b=b"\x01\x02", flag=True, ids=(1, 2), blobs=(b"a", b"bc"))
    assert p.get_int("n", lo=1, hi=3) == 3
    assert p.get_float("x", lo=0, hi=1) == 0.5
    assert p.get_float("n") == 3.0
    assert p.get_str("s", allowed=("sgd", "adam")) == "sgd"
    assert p.get_bytes("b", size=2) == b"\x01\x02"
    assert p.get_bool("flag") is True
    assert p.get_ints("ids") == (1, 2)
    assert p.get_bytes_list("blobs") == (b"a", b"bc")
    with pytest.raises(CodecError, match="'n': 3 is outside"):
        p.get_int("n", hi=2)
    with pytest.raises(CodecError, match="expected an integer"):
        p.get_int("flag")
    with pytest.raises(CodecError, match="'missing' is missing"):
        p.get_int("missing")
    with pytest.raises(CodecError, match="not one of"):
        p.get_str("s", allowed=("adam",))
    with pytest.raises(CodecError, match="2 bytes, expected 3"):
        p.get_bytes("b", size=3)


def test_unsupported_values_are_refused() -> None:
    with pytest.raises(CodecError, match="cannot travel"):
        Payload(x={"a": 1})
    with pytest.raises(CodecError, match="only ints or only bytes"):
        Payload(x=(1, b"a"))


def test_sections_and_prefixes() -> None:
    p = Payload({**prefixed("secagg", {"pk": b"k"}), "fit.round": 1})
    assert p.section("secagg").get_bytes("pk") == b"k"
    with pytest.raises(CodecError, match="set twice"):
        p.merged({"fit.round": 2})


def test_nbytes_counts_content() -> None:
    p = Payload(update=np.zeros(10, np.float32), blob=b"x" * 5)
    assert p.nbytes == 40 + 5 + len("update") + len("blob")
