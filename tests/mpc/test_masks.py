"""Tests for mpc.masks: the sign rule, and the vectorised paths against a loop oracle."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import ring_bits

from mpc import ParameterError, RingVector
from mpc.masks import apply_masks, pairwise_sign, remove_masks
from mpc.prg import MaskExpander, expand


def _loop_mask(x: list[int], words: list[list[int]], signs: list[int], bits: int) -> list[int]:
    """Oracle: element by element with Python integers."""
    out = list(x)
    for mask, sign in zip(words, signs, strict=True):
        out = [(o + sign * m) % (1 << bits) for o, m in zip(out, mask, strict=True)]
    return out


def test_sign_rule_is_antisymmetric() -> None:
    for u, v in itertools.permutations(range(1, 6), 2):
        assert pairwise_sign(u, v) == -pairwise_sign(v, u)
    with pytest.raises(ParameterError):
        pairwise_sign(3, 3)


@given(bits=ring_bits(), length=st.integers(1, 20), peers=st.sets(st.integers(1, 9), max_size=5))
def test_apply_masks_matches_the_loop_oracle(bits: int, length: int, peers: set[int]) -> None:
    # Prepare
    me = 5
    peers.discard(me)
    dtype: Any = np.uint32 if bits == 32 else np.uint64
    x = np.arange(length, dtype=dtype)
    self_key = bytes([me]) * 32
    pair_keys = {p: bytes([p, me]) * 16 for p in sorted(peers)}

    # Execute
    masked = apply_masks(
        RingVector(x),
        index=me,
        self_key=self_key,
        pairwise_keys=pair_keys,
        expander=MaskExpander(length=length, ring_bits=bits),
    )

    # Assert
    words = [expand(self_key, length, ring_bits=bits).tolist()] + [
        expand(k, length, ring_bits=bits).tolist() for k in pair_keys.values()
    ]
    signs = [1] + [1 if me < p else -1 for p in pair_keys]
    assert [int(v) for v in masked] == _loop_mask([int(v) for v in x], words, signs, bits)
    assert np.array_equal(x, np.arange(length, dtype=dtype))  # input not modified


@given(bits=ring_bits(), n=st.integers(2, 6), dropped=st.sets(st.integers(1, 6)))
def test_pairwise_masks_cancel_and_remove_masks_recovers_the_sum(
    bits: int, n: int, dropped: set[int]
) -> None:
    # Prepare: complete graph over n clients, one key per pair; `dropped` send nothing.
    length = 8
    dtype: Any = np.uint32 if bits == 32 else np.uint64
    expander = MaskExpander(length=length, ring_bits=bits)
    clients = range(1, n + 1)
    survivors = [u for u in clients if u not in dropped]
    pair_key = {
        (u, v): bytes([min(u, v), max(u, v)]) * 16 for u in clients for v in clients if u != v
    }
    inputs = {u: np.full(length, u * 1000, dtype=dtype) for u in clients}
    masked = {
        u: apply_masks(
            RingVector(inputs[u]),
            index=u,
            self_key=bytes([u]) * 32,
            pairwise_keys={v: pair_key[u, v] for v in clients if v != u},
            expander=expander,
        )
        for u in survivors
    }
    total = np.zeros(length, dtype=dtype)
    for u in survivors:
        total += masked[u]

    # Execute
    remove_masks(
        total,
        self_keys=[bytes([u]) * 32 for u in survivors],
        pairwise=[(w, v, pair_key[w, v]) for v in sorted(dropped) if v <= n for w in survivors],
        expander=expander,
    )

    # Assert
    expected = sum(u * 1000 for u in survivors) % (1 << bits)
    assert total.tolist() == [expected] * length
