"""Shared Hypothesis strategies: ring vectors, float updates, thresholds, cohorts and dropouts.

Import them in tests with ``from strategies import ...`` (``tests/`` is on ``sys.path`` because it
holds ``conftest.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

RING_DTYPES = {32: np.uint32, 64: np.uint64}


def ring_bits() -> st.SearchStrategy[int]:
    """The supported ring sizes."""
    return st.sampled_from([32, 64])


def ring_vectors(
    *, ring_bits: int, min_length: int = 0, max_length: int = 64
) -> st.SearchStrategy[npt.NDArray[Any]]:
    """Flat vectors of arbitrary ring elements (uint32 or uint64)."""
    return hnp.arrays(
        dtype=RING_DTYPES[ring_bits],
        shape=st.integers(min_length, max_length),
        elements=st.integers(0, (1 << ring_bits) - 1),
    )


def float_updates(
    *, min_length: int = 1, max_length: int = 64, magnitude: float = 10.0
) -> st.SearchStrategy[npt.NDArray[np.float32]]:
    """Flat float32 updates with finite values in [-magnitude, magnitude], clip edges included."""
    edges = st.sampled_from([0.0, magnitude, -magnitude, 1.0, -1.0])
    values = st.floats(-magnitude, magnitude, allow_nan=False, width=32) | edges
    return hnp.arrays(dtype=np.float32, shape=st.integers(min_length, max_length), elements=values)


def secrets32() -> st.SearchStrategy[bytes]:
    """32-byte secrets (seeds, keys), including the all-zero and all-one extremes."""
    return st.binary(min_size=32, max_size=32) | st.sampled_from([bytes(32), b"\xff" * 32])


@st.composite
def threshold_cohorts(draw: st.DrawFn, *, max_holders: int = 12) -> tuple[int, int]:
    """(threshold, number of holders) with 1 <= threshold <= holders."""
    holders = draw(st.integers(1, max_holders))
    return draw(st.integers(1, holders)), holders


@dataclass(frozen=True)
class RoundPlan:
    """A secure-aggregation round to run: cohort, graph, threshold, vector and who drops when.

    Attributes:
        num_clients: n.
        degree: k (n - 1 for the complete graph).
        threshold: t.
        dropout_rate: the tolerated dropout rate that makes (k, t) valid with corrupt_rate 0.
        ring_bits: 32 or 64.
        vector_length: number of parameters.
        drop_stage: client index -> stage number (0 advertise, 1 share keys, 2 masked input,
            3 consistency check, 4 unmask) at which it stops answering; clients absent never
            drop.
        seed: seeds the graph and the inputs.
    """

    num_clients: int
    degree: int
    threshold: int
    dropout_rate: float
    ring_bits: int
    vector_length: int
    drop_stage: dict[int, int]
    seed: int


@st.composite
def round_plans(
    draw: st.DrawFn, *, max_clients: int = 8, max_length: int = 24, max_drops: int | None = None
) -> RoundPlan:
    """Rounds over the complete graph or a sparse Harary graph, with dropouts at any stage.

    For the complete graph the dropout rate is set to (n - t) / n so that fcp's full-graph rule
    t >= ceil((1 - dropout_rate) n) accepts t; sparse graphs use dropout rate 0, under which every
    t in [2, k] is valid.
    """
    n = draw(st.integers(3, max_clients))
    sparse_degrees = list(range(2, n - 1, 2))
    full = not sparse_degrees or draw(st.booleans())
    if full:
        degree = n - 1
        threshold = draw(st.integers(2, n))
        dropout_rate = (n - threshold) / n + 1e-9
    else:
        degree = draw(st.sampled_from(sparse_degrees))
        threshold = draw(st.integers(2, degree))
        dropout_rate = 0.0
    limit = n if max_drops is None else max_drops
    dropping = draw(st.lists(st.integers(1, n), unique=True, max_size=limit))
    drop_stage = {i: draw(st.integers(0, 4)) for i in dropping}
    return RoundPlan(
        num_clients=n,
        degree=degree,
        threshold=threshold,
        dropout_rate=dropout_rate,
        ring_bits=draw(ring_bits()),
        vector_length=draw(st.integers(1, max_length)),
        drop_stage=drop_stage,
        seed=draw(st.integers(0, 2**32 - 1)),
    )
