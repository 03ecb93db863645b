from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fl_core.dp.accounting import GaussianEvent, compose, epsilon_rdp
from fl_core.dp.dpsgd import (
    ClippingMode,
    DPSGDConfig,
    DPSGDSession,
    clipped_gradient_sum,
    resolve_clipping,
)
from fl_core.dp.noise import csprng
from fl_core.dp.sampling import poisson_indices
from fl_core.dp.skellam import PrivacyUnit, calibrate_skellam, skellam_decode, skellam_encode
from fl_core.errors import CodecError, ConfigError

DELTA = 1e-5


def _data(n: int = 200, features: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 2))


def _session(config: DPSGDConfig, *, seed: int = 0, batch_size: int = 20) -> DPSGDSession:
    model = _model(seed)
    x, y = _data()
    return DPSGDSession(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=batch_size),
        criterion=nn.CrossEntropyLoss(),
        config=config,
    )


def test_session_survives_one_call_per_round() -> None:
    # Prepare: q = 20/200 = 0.1, one epoch = 10 steps per round
    session = _session(DPSGDConfig(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.1))
    global_weights = session.weights()
    # Execute: three federated rounds, each from the (same) global weights
    reports = []
    for _ in range(3):
        session.load_weights(global_weights)
        reports.append(session.train_round())
        new = session.weights()
        assert any(not np.array_equal(new[k], global_weights[k]) for k in new)
    # Assert
    event = GaussianEvent(noise_multiplier=1.1, sample_rate=0.1, steps=10)
    assert [r.event for r in reports] == [event] * 3
    assert session.next_round_event() == event
    assert reports[0].epsilon.rdp < reports[1].epsilon.rdp < reports[2].epsilon.rdp
    assert reports[2].epsilon == compose([event] * 3, delta=DELTA)
    assert reports[2].epsilon.pld is not None and reports[2].epsilon.pld <= reports[2].epsilon.rdp
    assert all(math.isfinite(r.mean_loss) for r in reports)


@pytest.mark.parametrize(
    "clipping", [ClippingMode.PER_LAYER, ClippingMode.GHOST, ClippingMode.BOOKKEEPING]
)
def test_per_layer_ghost_and_bookkeeping_clipping_train(clipping: ClippingMode) -> None:
    session = _session(
        DPSGDConfig(
            max_grad_norm=1.0,
            delta=DELTA,
            noise_multiplier=1.0,
            clipping=clipping,
            report_pld=False,
        )
    )
    before = session.weights()
    report = session.train_round()
    assert report.steps == 10
    assert report.epsilon.pld is None
    assert any(not np.array_equal(session.weights()[k], before[k]) for k in before)


def test_auto_clipping_picks_bookkeeping_then_ghost_where_every_layer_allows_it() -> None:
    mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    normed = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))  # Opacus only
    odd = nn.Sequential(nn.Linear(4, 4), nn.PReLU(), nn.Linear(4, 2))  # PReLU: no sampler
    assert resolve_clipping(mlp, ClippingMode.AUTO) is ClippingMode.BOOKKEEPING
    assert resolve_clipping(conv, ClippingMode.AUTO) is ClippingMode.BOOKKEEPING
    assert resolve_clipping(normed, ClippingMode.AUTO) is ClippingMode.GHOST
    assert resolve_clipping(odd, ClippingMode.AUTO) is ClippingMode.FLAT
    assert resolve_clipping(mlp, ClippingMode.FLAT) is ClippingMode.FLAT
    assert (
        _session(DPSGDConfig(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0)).clipping
        is ClippingMode.BOOKKEEPING
    )


def _trained_with(clipping: ClippingMode, key: bytes, noise_multiplier: float) -> dict:
    model = _model(3)
    x, y = _data()
    session = DPSGDSession(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=20),
        criterion=nn.CrossEntropyLoss(),
        config=DPSGDConfig(
            max_grad_norm=0.05,  # small: almost every example is clipped
            delta=DELTA,
            noise_multiplier=noise_multiplier,
            clipping=clipping,
            report_pld=False,
        ),
        rng=csprng(seed=key),
    )
    report = session.train_round()
    assert report.steps == 10
    return session.weights()


@pytest.mark.parametrize("noise_multiplier", [1e-6, 1.0])
def test_bookkeeping_takes_the_same_steps_as_opacus_ghost_clipping(
    noise_multiplier: float,
) -> None:
    # Same key: the same Poisson batches and the same noise; the released update of each step is
    # (sum of clipped per-example gradients + noise) / expected batch size in both, so 10 steps
    # with momentum land on the same weights (up to Opacus's C / (norm + 1e-6) against C / norm).
    key = bytes(range(16))
    ghost = _trained_with(ClippingMode.GHOST, key, noise_multiplier)
    kept = _trained_with(ClippingMode.BOOKKEEPING, key, noise_multiplier)
    start = _model(3).state_dict()
    for name in ghost:
        np.testing.assert_allclose(kept[name], ghost[name], rtol=1e-4, atol=1e-6)
        assert not np.allclose(ghost[name], start[name].numpy(), atol=1e-4)


def test_a_bookkeeping_step_on_an_empty_poisson_batch_still_adds_noise() -> None:
    # q = 1/2000: with this key (found by trying keys) the three Poisson batches are all empty,
    # and the released update is still the noise (an empty batch must not show in the weights).
    model = _model(0)
    x, y = _data(2000)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    session = DPSGDSession(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=1),
        criterion=nn.CrossEntropyLoss(),
        config=DPSGDConfig(
            max_grad_norm=1.0,
            delta=DELTA,
            noise_multiplier=1.0,
            max_steps_per_round=3,
            clipping=ClippingMode.BOOKKEEPING,
            report_pld=False,
        ),
        rng=csprng(seed=bytes([68]) * 16),
    )
    report = session.train_round()
    assert (report.steps, report.examples) == (3, 0)
    assert math.isnan(report.mean_loss)
    after = session.weights()
    assert all(np.isfinite(after[k]).all() for k in after)
    assert all(not np.array_equal(after[k], before[k].numpy()) for k in after)


def test_target_epsilon_is_met_after_the_planned_rounds() -> None:
    # Calibrated by PLD (the default): the PLD epsilon meets the target, the RDP bound exceeds it.
    config = DPSGDConfig(max_grad_norm=1.0, delta=DELTA, target_epsilon=2.0, planned_rounds=3)
    session = _session(config)
    for _ in range(3):
        report = session.train_round()
    assert report.epsilon.pld is not None
    assert report.epsilon.epsilon == report.epsilon.pld <= 2.0
    assert report.epsilon.pld == pytest.approx(2.0, rel=0.02)  # calibrated, not padded
    assert report.epsilon.rdp > 2.0


def test_noise_does_not_come_from_torchs_global_generator() -> None:
    # Two sessions that share every seed of the global torch generator still get different noise.
    results = []
    for _ in range(2):
        session = _session(
            DPSGDConfig(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, report_pld=False)
        )
        torch.manual_seed(123)
        session.train_round()
        results.append(session.weights())
    assert session._bk is not None and session._bk._secure is True
    assert any(not np.array_equal(results[0][k], results[1][k]) for k in results[0])


def test_load_weights_checks_names_dtypes_and_shapes() -> None:
    session = _session(DPSGDConfig(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0))
    weights = session.weights()
    name = next(iter(weights))
    with pytest.raises(CodecError, match="names"):
        session.load_weights({**weights, "extra": weights[name]})
    with pytest.raises(CodecError, match="dtype"):
        session.load_weights({**weights, name: weights[name].astype(np.float64)})
    with pytest.raises(CodecError, match="shape"):
        session.load_weights({**weights, name: weights[name].reshape(-1)})


def test_incompatible_models_and_configs_are_refused() -> None:
    x, y = _data()
    model = nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match="DP-SGD compatible"):
        DPSGDSession(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=DataLoader(TensorDataset(x, y), batch_size=20),
            criterion=nn.CrossEntropyLoss(),
            config=DPSGDConfig(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0),
        )
    with pytest.raises(ConfigError, match="exactly one"):
        DPSGDConfig(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, target_epsilon=1.0)
    with pytest.raises(ConfigError, match="layer_norms"):
        DPSGDConfig(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, layer_norms=(1.0,))
    with pytest.raises(ConfigError, match="layer_norms has 1 bounds"):
        _session(
            DPSGDConfig(
                max_grad_norm=1.0,
                delta=DELTA,
                noise_multiplier=1.0,
                clipping=ClippingMode.PER_LAYER,
                layer_norms=(1.0,),
            )
        )
    with pytest.raises(ConfigError, match="max_grad_norm"):
        DPSGDConfig(max_grad_norm=0.0, delta=DELTA, noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="clipping must be one of"):
        DPSGDConfig(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, clipping="adaptive")  # type: ignore[arg-type]
    as_text = DPSGDConfig(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, clipping="ghost")  # type: ignore[arg-type]
    assert as_text.clipping is ClippingMode.GHOST


def test_clipped_gradient_sum_matches_a_per_example_oracle() -> None:
    # Prepare
    model = _model(1)
    x, y = _data(seed=1)
    clip, rate = 0.3, 0.25
    chosen = poisson_indices(len(x), rate=rate, rng=csprng(seed=b"o" * 16))
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    oracle = np.zeros(sum(p.numel() for p in model.parameters()))
    for i in chosen:
        model.zero_grad()
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double().numpy()
        oracle += g * min(1.0, clip * (1 - 2**-20) / np.linalg.norm(g))
    # Execute
    result = clipped_gradient_sum(
        model,
        x,
        y,
        clip=clip,
        sample_rate=rate,
        loss_fn=loss_fn,
        rng=csprng(seed=b"o" * 16),
        physical_batch=16,
    )
    # Assert
    assert result.batch_size == len(chosen)
    assert result.vector.dtype == np.float64
    np.testing.assert_allclose(result.vector, oracle, rtol=1e-5, atol=1e-7)
    assert np.linalg.norm(result.vector) <= result.batch_size * clip
    assert not hasattr(next(model.parameters()), "grad_sample")  # Opacus hooks removed


def test_clipped_gradient_sum_handles_empty_batches_and_checks_the_loss() -> None:
    model = _model(2)
    x, y = _data()
    empty = clipped_gradient_sum(
        model,
        x,
        y,
        clip=1.0,
        sample_rate=0.0,
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        rng=csprng(),
    )
    assert empty.batch_size == 0 and not np.any(empty.vector)
    with pytest.raises(ConfigError, match="reduction"):
        clipped_gradient_sum(
            model, x, y, clip=1.0, sample_rate=0.5, loss_fn=nn.CrossEntropyLoss(), rng=csprng()
        )
    with pytest.raises(CodecError, match="examples"):
        clipped_gradient_sum(
            model,
            x,
            y[:-1],
            clip=1.0,
            sample_rate=0.5,
            loss_fn=nn.CrossEntropyLoss(reduction="sum"),
            rng=csprng(),
        )


def test_dp_fedsgd_step_through_the_skellam_pipeline() -> None:
    # Prepare: three institutions with their own data, one DP-FedSGD step at q = 0.2
    model = _model(3)
    dim = sum(p.numel() for p in model.parameters())
    config = calibrate_skellam(
        target_epsilon=4.0, delta=DELTA, dim=dim, clip=0.5, bits=24, expected_clients=3,
        min_clients=3, rounds=50, unit=PrivacyUnit.EXAMPLE, sample_rate=0.2, expected_batch=120.0,
    )  # fmt: skip
    seed = b"fedsgd-round-0001-rotation-seed!"
    sums, ring_total = [], np.zeros(config.padded_dim, dtype=np.uint32)
    # Execute
    for k in range(3):
        x, y = _data(seed=10 + k)
        part = clipped_gradient_sum(
            model,
            x,
            y,
            clip=0.5,
            sample_rate=0.2,
            loss_fn=nn.CrossEntropyLoss(reduction="sum"),
            rng=csprng(),
        )
        sums.append(part.vector)
        ring_total += skellam_encode(
            part.vector,
            config=config,
            rotation_seed=seed,
            rng=csprng(),
            num_examples=part.batch_size,
        )
    noisy = skellam_decode(ring_total, config=config, rotation_seed=seed)
    # Assert: the masked-sum result is the total clipped gradient plus noise of the planned size
    error = noisy - np.sum(sums, axis=0)
    assert error.std() == pytest.approx(config.central_std(3), rel=0.25)
    assert epsilon_rdp([], delta=DELTA) == 0.0
