from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl_core.dp.clipping import clip_float64, clip_update, l2_norm
from fl_core.errors import CodecError, ConfigError

finite32 = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
updates = hnp.arrays(np.float32, st.integers(1, 200), elements=finite32)
clips = st.floats(1e-3, 1e3, allow_nan=False)


@given(update=updates, clip=clips)
def test_clipped_norm_never_exceeds_bound(update: np.ndarray, clip: float) -> None:
    # Execute
    clipped, norm = clip_update(update, clip=clip)
    # Assert
    assert clipped.dtype == np.float32
    assert clipped.shape == update.shape
    assert l2_norm(clipped) <= clip
    assert norm == pytest.approx(float(np.linalg.norm(update.astype(np.float64))), rel=1e-12)


@given(update=updates, clip=clips)
def test_clipping_keeps_direction_and_small_updates(update: np.ndarray, clip: float) -> None:
    # Execute
    clipped, norm = clip_update(update, clip=clip)
    # Assert
    if norm <= clip:
        np.testing.assert_array_equal(clipped, update)
    elif norm > 0:
        u = update.astype(np.float64) / norm
        c = clipped.astype(np.float64) / l2_norm(clipped)
        assert float(np.dot(u, c)) == pytest.approx(1.0, abs=1e-5)
        assert l2_norm(clipped) == pytest.approx(clip, rel=1e-5)


def test_clip_returns_a_copy() -> None:
    # Prepare
    update = np.array([0.1, 0.2], dtype=np.float32)
    # Execute
    clipped, _ = clip_update(update, clip=10.0)
    clipped[0] = 5.0
    # Assert
    assert update[0] == np.float32(0.1)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        (np.zeros(3, dtype=np.float64), "dtype"),
        (np.zeros((2, 2), dtype=np.float32), "one-dimensional"),
        (np.array([1.0, np.nan], dtype=np.float32), "NaN"),
        (np.array([np.inf], dtype=np.float32), "NaN or infinite"),
        ([1.0, 2.0], "numpy array"),
    ],
)
def test_bad_updates_are_rejected(update: object, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        clip_update(update, clip=1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("clip", [0.0, -1.0, float("inf"), float("nan"), True])
def test_bad_clip_is_rejected(clip: float) -> None:
    with pytest.raises(ConfigError, match="clip"):
        clip_update(np.ones(3, dtype=np.float32), clip=clip)


@given(update=updates, clip=clips)
def test_float64_clip_keeps_a_margin(update: np.ndarray, clip: float) -> None:
    # Execute
    clipped = clip_float64(update, clip=clip)
    # Assert
    assert clipped.dtype == np.float64
    assert l2_norm(clipped) <= clip * (1 - 2**-21)
