from __future__ import annotations

import numpy as np
import pytest

from fl_core.dp.central import add_central_noise, gaussian_sum
from fl_core.dp.noise import csprng
from fl_core.errors import CodecError, ConfigError


def test_gaussian_sum_clips_each_update_then_adds_noise_once() -> None:
    # Prepare: one update far above the clip bound, one below
    big = np.array([30.0, 40.0, 0.0], dtype=np.float32)  # norm 50
    small = np.array([0.1, 0.0, 0.2], dtype=np.float32)
    expected = big / 50 * 2 + small
    rng = csprng(seed=b"n" * 16)
    # Execute
    outputs = np.stack(
        [gaussian_sum([big, small], clip=2.0, noise_multiplier=0.5, rng=rng) for _ in range(20000)]
    )
    # Assert: mean is the clipped sum, std is sigma * C = 1 on every coordinate
    assert outputs.dtype == np.float32
    np.testing.assert_allclose(outputs.mean(axis=0), expected, atol=5 * 1.0 / np.sqrt(20000))
    np.testing.assert_allclose(outputs.std(axis=0), 1.0, rtol=0.03)


def test_add_central_noise_validates_arguments() -> None:
    rng = csprng(seed=b"n" * 16)
    total = np.zeros(4, dtype=np.float32)
    with pytest.raises(ConfigError, match="noise_multiplier"):
        add_central_noise(total, clip=1.0, noise_multiplier=0.0, rng=rng)
    with pytest.raises(ConfigError, match="clip"):
        add_central_noise(total, clip=-1.0, noise_multiplier=1.0, rng=rng)
    with pytest.raises(CodecError, match="float32"):
        add_central_noise(np.zeros(4), clip=1.0, noise_multiplier=1.0, rng=rng)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least one"):
        gaussian_sum([], clip=1.0, noise_multiplier=1.0, rng=rng)
    with pytest.raises(CodecError, match="shape"):
        gaussian_sum([total, np.zeros(3, np.float32)], clip=1.0, noise_multiplier=1.0, rng=rng)
