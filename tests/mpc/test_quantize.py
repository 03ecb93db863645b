"""Tests for mpc.quantize: the documented error bound, unbiasedness and the wraparound guard."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import float_updates

from mpc import ParameterError, check_no_wraparound, dequantize_sum, quantization_step, quantize


@given(
    updates=st.lists(
        float_updates(min_length=8, max_length=8, magnitude=3.0), min_size=1, max_size=9
    ),
    bits=st.integers(2, 40),
    ring=st.sampled_from([32, 64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantize_sum_dequantize_stays_within_n_steps(
    updates: list[np.ndarray], bits: int, ring: int, seed: int
) -> None:
    # Prepare: up to 9 clients; bits above 28 need the 64-bit ring.
    ring = 64 if bits > 28 else ring
    clip, n = 2.0, len(updates)
    rng = np.random.default_rng(seed)

    # Execute
    quantized = [quantize(u, clip=clip, bits=bits, ring_bits=ring, rng=rng) for u in updates]
    total = np.sum(quantized, axis=0, dtype=quantized[0].dtype)
    estimate = dequantize_sum(total, num_clients=n, clip=clip, bits=bits, ring_bits=ring)

    # Assert
    step, _ = quantization_step(clip=clip, bits=bits)
    truth = np.sum([np.clip(u.astype(np.float64), -clip, clip) for u in updates], axis=0)
    assert np.all(np.abs(estimate - truth) <= n * step * (1 + 1e-9))
    assert all(int(q.max()) <= 2**bits - 1 for q in quantized)


def test_stochastic_rounding_is_unbiased() -> None:
    # Prepare: a value a third of the way between two levels.
    bits, clip = 4, 1.0
    step, offset = quantization_step(clip=clip, bits=bits)
    x = np.full(200_000, offset + 5.3333 * step, dtype=np.float64)

    # Execute
    q = quantize(x, clip=clip, bits=bits, ring_bits=32, rng=np.random.default_rng(1))

    # Assert: only the two neighbouring levels, with mean 5.3333 within 5 standard errors.
    assert set(np.unique(q).tolist()) == {5, 6}
    standard_error = np.sqrt(0.3333 * 0.6667 / x.size)
    assert abs(q.mean() - 5.3333) < 5 * standard_error


def test_clip_edges_quantize_to_the_extreme_levels_and_do_not_wrap() -> None:
    # Prepare: the largest cohort that fits 16 bits in Z_2^32, every client at +clip.
    bits, n = 16, (2**32 - 1) // (2**16 - 1)
    check_no_wraparound(num_clients=n, bits=bits, ring_bits=32)
    top = quantize(
        np.full(3, 5.0, np.float32), clip=1.0, bits=bits, ring_bits=32, rng=np.random.default_rng(0)
    )
    bottom = quantize(
        np.full(3, -5.0, np.float32),
        clip=1.0,
        bits=bits,
        ring_bits=32,
        rng=np.random.default_rng(0),
    )

    # Execute
    total = (top.astype(np.uint64) * n).astype(np.uint32)
    estimate = dequantize_sum(total, num_clients=n, clip=1.0, bits=bits, ring_bits=32)

    # Assert
    assert top.tolist() == [2**16 - 1] * 3 and bottom.tolist() == [0, 0, 0]
    assert int(total[0]) == n * (2**16 - 1)
    np.testing.assert_allclose(estimate, n * 1.0, rtol=1e-12)


def test_a_configuration_that_can_wrap_is_refused_with_the_limit() -> None:
    with pytest.raises(ParameterError, match="at most 65537 clients"):
        check_no_wraparound(num_clients=65538, bits=16, ring_bits=32)
    with pytest.raises(ParameterError, match="2\\^32.*use bits <= 30"):
        dequantize_sum(np.zeros(2, np.uint32), num_clients=3, clip=1.0, bits=31, ring_bits=32)
    check_no_wraparound(num_clients=65538, bits=16, ring_bits=64)


def test_dequantize_refuses_a_total_no_cohort_could_produce() -> None:
    total = np.array([0, 3 * (2**8 - 1) + 1], dtype=np.uint32)
    with pytest.raises(ParameterError, match="did the masks cancel"):
        dequantize_sum(total, num_clients=3, clip=1.0, bits=8, ring_bits=32)


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (np.array([np.nan], np.float32), {}, "NaN"),
        (np.array([1], np.int32), {}, "float32 or float64"),
        (np.zeros((2, 2), np.float32), {}, "one-dimensional"),
        (np.zeros(2, np.float32), {"clip": 0.0}, "clip"),
        (np.zeros(2, np.float32), {"clip": float("inf")}, "clip"),
        (np.zeros(2, np.float32), {"bits": 0}, "bits"),
        (np.zeros(2, np.float32), {"bits": 41, "ring_bits": 64}, "bits"),
        (np.zeros(2, np.float32), {"bits": 32}, "bits must be < ring_bits"),
    ],
)
def test_quantize_rejects_bad_input(x: np.ndarray, kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "clip": 1.0,
        "bits": 8,
        "ring_bits": 32,
        "rng": np.random.default_rng(0),
    }
    arguments.update(kwargs)
    with pytest.raises(ParameterError, match=message):
        quantize(x, **arguments)  # type: ignore[arg-type]


def test_quantize_needs_an_injected_generator() -> None:
    with pytest.raises(ParameterError, match="Generator"):
        legacy: Any = np.random.RandomState(0)
        quantize(np.zeros(2, np.float32), clip=1.0, bits=8, ring_bits=32, rng=legacy)
