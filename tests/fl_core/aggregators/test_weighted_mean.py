"""The FedAvg mean: blocked for speed, yet bit for bit the straightforward float64 formula."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_core.aggregators import base
from fl_core.aggregators.base import weighted_mean


def straightforward(updates: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    total = float(sum(weights[c] for c in updates))
    clients = sorted(updates)
    acc = updates[clients[0]].astype(np.float64) * (weights[clients[0]] / total)
    for c in clients[1:]:
        acc += updates[c].astype(np.float64) * (weights[c] / total)
    return acc.astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(
    clients=st.integers(1, 6),
    size=st.integers(0, 40),
    block=st.sampled_from([1, 3, 8, 1 << 17]),
    seed=st.integers(0, 2**32 - 1),
)
def test_blocked_mean_equals_the_straightforward_formula(
    clients: int, size: int, block: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    updates = {
        f"c{i}": (rng.standard_normal(size) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
        for i in range(clients)
    }
    weights = {c: float(rng.integers(1, 1000)) for c in updates}
    saved = base._BLOCK
    base._BLOCK = block  # small blocks exercise the block edges
    try:
        mean, total = weighted_mean(updates, weights)
    finally:
        base._BLOCK = saved
    assert total == sum(weights.values())
    assert mean.dtype == np.float32
    np.testing.assert_array_equal(mean, straightforward(updates, weights))


def test_a_large_mean_crosses_many_blocks() -> None:
    rng = np.random.default_rng(0)
    updates = {f"c{i}": rng.standard_normal(3 * (1 << 17) + 5).astype(np.float32) for i in range(3)}
    weights = {"c0": 1.0, "c1": 2.0, "c2": 7.0}
    mean, _ = weighted_mean(updates, weights)
    np.testing.assert_array_equal(mean, straightforward(updates, weights))


def test_an_update_above_max_update_norm_is_refused_naming_the_limit() -> None:
    from owner_harness import server_round
    from support import LinearTrainer, job_text, parse

    from fl_core.client.runtime import Client
    from fl_core.errors import CodecError
    from fl_core.payload import Payload

    job = parse(job_text(clients=2, min_clients=2, extra="[limits]\nmax_update_norm = 1.0\n"))
    clients = [Client(name=f"client-{i}", job=job, trainer=LinearTrainer(i)) for i in range(2)]
    server = server_round(job, clients)
    small = np.array([0.6, 0.0, 0.0, 0.0, 0.79], np.float32)  # norm < 1
    server.check("fit", "client-0", Payload({"update": small, "num_examples": 10}))
    big = np.array([1e9, 0.0, 0.0, 0.0, 0.0], np.float32)  # a 1e9-weighted takeover attempt
    with pytest.raises(CodecError, match=r"limits\.max_update_norm = 1"):
        server.check("fit", "client-1", Payload({"update": big, "num_examples": 10}))
