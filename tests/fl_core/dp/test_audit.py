"""Mechanism-level privacy audits (REFERENCES.md section 3.5, tier 1).

World 0 aggregates one background client; world 1 adds a canary client whose update points along
the first axis. The adversary knows the background update and scores the first coordinate of the
released sum. A correct aggregator must give eps_LB <= eps_claimed; with clipping or noise switched
off (monkeypatched here) the same harness must refute the claim.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fl_core.dp.central as central
import fl_core.dp.skellam as skellam
from fl_core.dp.accounting import GaussianEvent, compose
from fl_core.dp.audit import audit_mechanism, audit_scores, clopper_pearson_upper
from fl_core.dp.noise import csprng
from fl_core.dp.skellam import calibrate_skellam, skellam_decode, skellam_encode, skellam_epsilon

DELTA = 1e-5
SEED = b"audit-rotation-seed-0123456789ab"


def _no_clip(update: np.ndarray, *, clip: float) -> tuple[np.ndarray, float]:
    return update.copy(), float(np.linalg.norm(update))


def _gaussian_run(canary_norm: float, seed: bytes):  # type: ignore[no-untyped-def]
    rng = csprng(seed=seed)
    background = np.array([0.3, -0.2], dtype=np.float32)
    canary = np.array([canary_norm, 0.0], dtype=np.float32)

    def run(with_canary: bool) -> float:
        updates = [background, canary] if with_canary else [background]
        out = central.gaussian_sum(updates, clip=1.0, noise_multiplier=1.0, rng=rng)
        return float(out[0] - background[0])

    return run


def test_clopper_pearson_matches_known_values() -> None:
    # 0 errors in n trials: upper bound 1 - (1 - c)^(1/n); REFERENCES: 1000 models -> eps 5.60
    n = 1000
    upper = clopper_pearson_upper(0, n, confidence=0.975)
    assert upper == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)
    assert math.log((1 - upper) / upper) == pytest.approx(5.60, abs=0.01)
    assert clopper_pearson_upper(5, 5, confidence=0.95) == 1.0


def test_perfectly_separable_scores_give_the_trial_limited_bound() -> None:
    result = audit_scores(np.zeros(2000), np.ones(2000), delta=DELTA)
    assert result.epsilon_lower_bound == pytest.approx(
        math.log((1 - DELTA - result.fnr_upper) / result.fpr_upper)
    )
    assert result.epsilon_lower_bound > 5.5


def test_central_gaussian_aggregator_passes_its_audit() -> None:
    # Prepare
    claimed = compose([GaussianEvent(noise_multiplier=1.0)], delta=DELTA).epsilon
    # Execute
    result = audit_mechanism(_gaussian_run(1.0, b"a" * 16), trials=40_000, delta=DELTA)
    # Assert: consistent with the claim, and the audit has power (it finds a real leak)
    assert result.epsilon_lower_bound <= claimed
    assert result.epsilon_lower_bound > 1.0


def test_central_audit_flags_disabled_clipping(monkeypatch: pytest.MonkeyPatch) -> None:
    claimed = compose([GaussianEvent(noise_multiplier=1.0)], delta=DELTA).epsilon
    monkeypatch.setattr(central, "clip_update", _no_clip)
    result = audit_mechanism(_gaussian_run(4.0, b"b" * 16), trials=10_000, delta=DELTA)
    assert result.epsilon_lower_bound > claimed


def test_central_audit_flags_disabled_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    claimed = compose([GaussianEvent(noise_multiplier=1.0)], delta=DELTA).epsilon
    monkeypatch.setattr(central, "gaussian_noise", lambda size, **_: np.zeros(size))
    result = audit_mechanism(_gaussian_run(1.0, b"c" * 16), trials=10_000, delta=DELTA)
    assert result.epsilon_lower_bound > claimed


@pytest.fixture(scope="module")
def skellam_config() -> skellam.SkellamConfig:
    return calibrate_skellam(
        target_epsilon=2.0, delta=DELTA, dim=2, clip=1.0, bits=24, expected_clients=2,
        min_clients=2, rounds=1,
    )  # fmt: skip


def _skellam_run(config: skellam.SkellamConfig, canary_norm: float, seed: bytes):  # type: ignore[no-untyped-def]
    rng = csprng(seed=seed)
    background = np.array([0.3, -0.2], dtype=np.float32)
    canary = np.array([canary_norm, 0.0], dtype=np.float32)
    zero = np.zeros(2, dtype=np.float32)

    def run(with_canary: bool) -> float:
        # Zero-out neighbour: the canary client takes part in both worlds, with a zero update in
        # world 0 (the relation the distributed guarantee is stated for).
        total = np.zeros(config.padded_dim, dtype=np.uint32)
        for update in (background, canary if with_canary else zero):
            total += skellam_encode(update, config=config, rotation_seed=SEED, rng=rng)
        out = skellam_decode(total, config=config, rotation_seed=SEED)
        return float(out[0] - background[0])

    return run


def test_distributed_skellam_aggregator_passes_its_audit(
    skellam_config: skellam.SkellamConfig,
) -> None:
    claimed = skellam_epsilon(skellam_config, survivors=[2], delta=DELTA)
    result = audit_mechanism(
        _skellam_run(skellam_config, 1.0, b"d" * 16), trials=8_000, delta=DELTA
    )
    assert claimed <= 2.0
    assert result.epsilon_lower_bound <= claimed


def test_skellam_audit_flags_disabled_clipping(
    skellam_config: skellam.SkellamConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    claimed = skellam_epsilon(skellam_config, survivors=[2], delta=DELTA)
    monkeypatch.setattr(skellam, "clip_float64", lambda update, *, clip: update.astype(np.float64))
    result = audit_mechanism(
        _skellam_run(skellam_config, 8.0, b"e" * 16), trials=3_000, delta=DELTA
    )
    assert result.epsilon_lower_bound > claimed


def test_skellam_audit_flags_disabled_noise(
    skellam_config: skellam.SkellamConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    claimed = skellam_epsilon(skellam_config, survivors=[2], delta=DELTA)
    monkeypatch.setattr(skellam, "skellam_noise", lambda size, **_: np.zeros(size, np.int64))
    result = audit_mechanism(
        _skellam_run(skellam_config, 1.0, b"f" * 16), trials=3_000, delta=DELTA
    )
    assert result.epsilon_lower_bound > claimed
