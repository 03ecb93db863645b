from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

import fl_core.dp.skellam as skellam_module
from fl_core.dp.noise import csprng
from fl_core.dp.skellam import (
    PrivacyUnit,
    SkellamConfig,
    calibrate_skellam,
    new_rotation_seed,
    skellam_decode,
    skellam_encode,
    skellam_epsilon,
    skellam_round_event,
)
from fl_core.errors import CodecError, ConfigError

SEED = b"public-rotation-seed-of-round-01"
DELTA = 1e-5


@pytest.fixture(scope="module")
def config() -> SkellamConfig:
    return calibrate_skellam(
        target_epsilon=2.0, delta=DELTA, dim=1000, clip=1.0, bits=18,
        expected_clients=12, min_clients=8, rounds=20,
    )  # fmt: skip


def _updates(n: int, dim: int, norm: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        v = rng.standard_normal(dim)
        out.append((v * norm / np.linalg.norm(v)).astype(np.float32))
    return out


def _ring_sum(vectors: list[np.ndarray], dtype: type[np.unsignedinteger]) -> np.ndarray:
    total = np.zeros(vectors[0].shape, dtype=dtype)
    for v in vectors:
        total += v.astype(dtype)  # wraps modulo 2^32 or 2^64, as the masked sum does
    return total


def _centred(ring_sum: np.ndarray, bits: int) -> np.ndarray:
    v = (ring_sum.astype(np.uint64) & np.uint64((1 << bits) - 1)).astype(np.int64)
    v[v >= 1 << (bits - 1)] -= 1 << bits
    return v


def test_calibration_meets_the_target_at_the_minimum_cohort(config: SkellamConfig) -> None:
    # Execute
    at_min = skellam_epsilon(config, survivors=[8] * 20, delta=DELTA)
    at_expected = skellam_epsilon(config, survivors=[12] * 20, delta=DELTA)
    fewer = skellam_epsilon(config, survivors=[8] * 19 + [5], delta=DELTA)
    # Assert: tight at the calibration point, less spent when more survive, more when fewer do
    assert 0.99 * 2.0 <= at_min <= 2.0
    assert at_expected < at_min < fewer
    assert config.padded_dim == 1024
    assert config.ring_dtype == np.uint32


def test_round_trip_recovers_the_sum_of_clipped_updates(config: SkellamConfig) -> None:
    # Prepare: half the clients send updates above the clip bound
    updates = _updates(6, 1000, 0.5, seed=1) + _updates(6, 1000, 4.0, seed=2)
    clipped = [u * min(1.0, 1.0 / np.linalg.norm(u)) for u in updates]
    rng = csprng(seed=b"c" * 16)
    # Execute
    ring = [skellam_encode(u, config=config, rotation_seed=SEED, rng=rng) for u in updates]
    decoded32 = skellam_decode(_ring_sum(ring, np.uint32), config=config, rotation_seed=SEED)
    decoded64 = skellam_decode(_ring_sum(ring, np.uint64), config=config, rotation_seed=SEED)
    # Assert
    assert all(r.dtype == np.uint32 and r.shape == (1024,) for r in ring)
    assert all(int(r.max()) < 2**18 for r in ring)
    np.testing.assert_array_equal(decoded32, decoded64)  # Z_2^32 and Z_2^64 rings agree
    error = decoded32 - np.sum(clipped, axis=0)
    expected_std = math.sqrt(config.central_std(12) ** 2 + 12 / 4 / config.scale**2)
    assert error.std() == pytest.approx(expected_std, rel=0.1)


def test_aggregate_noise_variance_is_within_three_percent(config: SkellamConfig) -> None:
    # Prepare: zero updates round to zero exactly, so the decoded sum is the noise alone
    rng = csprng(seed=b"v" * 16)
    zero = np.zeros(1000, dtype=np.float32)
    samples = []
    # Execute
    for _ in range(40):
        ring = [skellam_encode(zero, config=config, rotation_seed=SEED, rng=rng) for _ in range(12)]
        samples.append(_centred(_ring_sum(ring, np.uint32), config.bits))
    noise = np.concatenate(samples).astype(np.float64)
    # Assert: variance of Sk(12 mu, 12 mu) is 24 mu; 40 * 1024 samples
    target = 2 * 12 * config.local_mu
    assert noise.var() == pytest.approx(target, rel=0.03)
    assert abs(noise.mean()) < 5 * math.sqrt(target / noise.size)


def test_wrap_rate_stays_under_its_bound_and_is_detected_when_bits_are_short() -> None:
    # Prepare: worst-case signal (all clients send the same full-norm update)
    bound = 0.01
    cfg = calibrate_skellam(
        target_epsilon=4.0, delta=DELTA, dim=500, clip=1.0, bits=12, expected_clients=10,
        min_clients=10, rounds=5, modclip_prob=bound,
    )  # fmt: skip
    exact = replace(cfg, bits=44)
    short = replace(cfg, bits=cfg.bits - 3)
    update = _updates(1, 500, 1.0, seed=3)[0]

    def wrap_rate(narrow: SkellamConfig, runs: int) -> float:
        wrapped = total = 0
        for run in range(runs):
            seeds = [bytes([run % 256, i]) * 8 for i in range(10)]
            wide = [
                skellam_encode(update, config=exact, rotation_seed=SEED, rng=csprng(seed=s))
                for s in seeds
            ]
            small = [
                skellam_encode(update, config=narrow, rotation_seed=SEED, rng=csprng(seed=s))
                for s in seeds
            ]
            truth = _centred(_ring_sum(wide, np.uint64), exact.bits)
            seen = _centred(_ring_sum(small, np.uint32), narrow.bits)
            wrapped += int(np.count_nonzero(truth != seen))
            total += truth.size
        return wrapped / total

    # Execute / Assert
    assert wrap_rate(cfg, 30) <= bound
    assert wrap_rate(short, 5) > bound


def test_conditional_rounding_respects_its_norm_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: take the noise out to look at the rounded vector itself
    cfg = SkellamConfig(
        dim=300, clip=1.0, bits=20, scale=20.0, local_mu=1.0, expected_clients=2,
        min_clients=2, beta=math.exp(-0.5),
    )  # fmt: skip
    plain = replace(cfg, beta=0.0)
    monkeypatch.setattr(skellam_module, "skellam_noise", lambda size, **_: np.zeros(size, np.int64))
    rng = csprng(seed=b"r" * 16)
    update = _updates(1, 300, 5.0, seed=4)[0]
    # Execute
    norms = [
        float(
            np.linalg.norm(
                _centred(skellam_encode(update, config=cfg, rotation_seed=SEED, rng=rng), 20)
            )
        )
        for _ in range(200)
    ]
    # Assert
    assert cfg.l2_sensitivity < plain.l2_sensitivity
    assert max(norms) <= cfg.l2_sensitivity
    assert cfg.l1_sensitivity == pytest.approx(
        min(cfg.l2_sensitivity**2, math.sqrt(512) * cfg.l2_sensitivity)
    )


def test_colluders_need_more_noise_per_client() -> None:
    kwargs = dict(
        target_epsilon=3.0, delta=DELTA, dim=200, clip=1.0, bits=20, expected_clients=10,
        min_clients=10, rounds=10,
    )  # fmt: skip
    honest = calibrate_skellam(**kwargs)  # type: ignore[arg-type]
    colluding = calibrate_skellam(**kwargs, colluders=3)  # type: ignore[arg-type]
    assert colluding.local_mu / colluding.scale**2 > honest.local_mu / honest.scale**2
    assert skellam_epsilon(colluding, survivors=[10] * 10, delta=DELTA) <= 3.0
    with pytest.raises(ConfigError, match="colluders"):
        skellam_round_event(colluding, survivors=3)


def test_example_unit_for_dp_fedsgd() -> None:
    # Prepare: 4 institutions, q = 0.05 Poisson sampling of examples, 100 steps
    cfg = calibrate_skellam(
        target_epsilon=3.0, delta=DELTA, dim=300, clip=0.5, bits=32, expected_clients=4,
        min_clients=3, rounds=100, unit=PrivacyUnit.EXAMPLE, sample_rate=0.05,
        expected_batch=100.0, colluders=1,
    )  # fmt: skip
    grads = np.random.default_rng(5).standard_normal((25, 300))
    grads *= 0.5 / np.linalg.norm(grads, axis=1, keepdims=True)
    total = grads.sum(axis=0)
    rng = csprng(seed=b"x" * 16)
    # Execute
    ring = skellam_encode(total, config=cfg, rotation_seed=SEED, rng=rng, num_examples=25)
    # Assert
    assert skellam_epsilon(cfg, survivors=[3] * 100, delta=DELTA) <= 3.0
    assert skellam_round_event(cfg, survivors=3).sample_rate == 0.05
    assert ring.shape == (512,)
    with pytest.raises(CodecError, match="not a sum of clipped"):
        skellam_encode(total, config=cfg, rotation_seed=SEED, rng=rng, num_examples=2)
    with pytest.raises(ConfigError, match="num_examples"):
        skellam_encode(total, config=cfg, rotation_seed=SEED, rng=rng)


def test_wide_rings_use_uint64() -> None:
    cfg = SkellamConfig(
        dim=10, clip=1.0, bits=40, scale=1e6, local_mu=10.0, expected_clients=1, min_clients=1
    )
    ring = skellam_encode(np.ones(10, np.float32), config=cfg, rotation_seed=SEED, rng=csprng())
    assert ring.dtype == np.uint64 and int(ring.max()) < 2**40
    with pytest.raises(CodecError, match="narrower"):
        skellam_decode(ring.astype(np.uint32), config=cfg, rotation_seed=SEED)


@pytest.mark.parametrize(
    ("ring_sum", "message"),
    [
        (np.zeros(1024, np.int64), "dtype"),
        (np.zeros(1024, np.float32), "dtype"),
        (np.zeros(1000, np.uint32), "shape"),
        (np.zeros((2, 512), np.uint32), "shape"),
        ([0] * 1024, "numpy array"),
    ],
)
def test_decode_rejects_bad_input(config: SkellamConfig, ring_sum: object, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        skellam_decode(ring_sum, config=config, rotation_seed=SEED)  # type: ignore[arg-type]


def test_encode_rejects_bad_input(config: SkellamConfig) -> None:
    rng = csprng()
    with pytest.raises(CodecError, match="length"):
        skellam_encode(np.zeros(999, np.float32), config=config, rotation_seed=SEED, rng=rng)
    with pytest.raises(CodecError, match="NaN"):
        skellam_encode(
            np.full(1000, np.nan, np.float32), config=config, rotation_seed=SEED, rng=rng
        )
    with pytest.raises(CodecError, match="float32 or float64"):
        skellam_encode(np.zeros(1000, np.int32), config=config, rotation_seed=SEED, rng=rng)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_examples"):
        skellam_encode(
            np.zeros(1000, np.float32), config=config, rotation_seed=SEED, rng=rng, num_examples=3
        )
    with pytest.raises(ConfigError, match="rotation_seed"):
        skellam_encode(np.zeros(1000, np.float32), config=config, rotation_seed=b"short", rng=rng)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dim": 0}, "dim"),
        ({"clip": 0.0}, "clip"),
        ({"bits": 1}, "bits"),
        ({"bits": 53}, "bits"),
        ({"scale": -1.0}, "scale"),
        ({"local_mu": 0.0}, "local_mu"),
        ({"min_clients": 0}, "min_clients"),
        ({"expected_clients": 3}, "expected_clients"),
        ({"colluders": 5}, "colluders"),
        ({"beta": 1.0}, "beta"),
        ({"sample_rate": 0.5}, "sample_rate"),
        ({"unit": PrivacyUnit.EXAMPLE, "beta": 0.5}, "beta"),
        ({"unit": "people"}, "unit"),
    ],
)
def test_config_validation_names_the_field(
    config: SkellamConfig, changes: dict[str, object], field: str
) -> None:
    base = replace(config, expected_clients=5, min_clients=5)
    with pytest.raises(ConfigError, match=field):
        replace(base, **changes)  # type: ignore[arg-type]


def test_units_given_as_strings_become_enum_members(config: SkellamConfig) -> None:
    assert replace(config, unit="client").unit is PrivacyUnit.CLIENT  # type: ignore[arg-type]


def test_calibration_refuses_too_few_bits() -> None:
    with pytest.raises(ConfigError, match="bits"):
        calibrate_skellam(
            target_epsilon=1.0, delta=DELTA, dim=100, clip=1.0, bits=4, expected_clients=100,
            min_clients=50, rounds=10,
        )  # fmt: skip


def test_rotation_seeds_are_fresh() -> None:
    assert new_rotation_seed() != new_rotation_seed()
    assert len(new_rotation_seed()) == 32
