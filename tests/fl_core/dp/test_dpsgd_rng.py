"""DP-SGD's noise and batches come from an AES-CTR CSPRNG keyed from the OS (issue 9, item 8)."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
import randomgen  # type: ignore[import-untyped]
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fl_core.dp.dpsgd import DPSGDConfig, DPSGDSession
from fl_core.dp.noise import csprng

DELTA = 1e-5


def _session(**kwargs: object) -> DPSGDSession:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 2))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=g)
    y = (x[:, 0] > 0).long()
    return DPSGDSession(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=20),
        criterion=nn.CrossEntropyLoss(),
        config=DPSGDConfig(max_grad_norm=1.0, delta=DELTA, noise_multiplier=1.0, report_pld=False),
        **kwargs,  # type: ignore[arg-type]
    )


def _trained(**kwargs: object) -> dict[str, np.ndarray]:
    session = _session(**kwargs)
    session.train_round()
    return session.weights()


def test_noise_is_not_a_function_of_63_bit_reseeds(monkeypatch: pytest.MonkeyPatch) -> None:
    # Attack on main: every step's noise and batch were torch Mersenne Twister streams seeded with
    # secrets.randbits(63), so whoever learns (or fixes) those 63 bits knows the noise exactly and
    # can subtract it. With randbits pinned, two runs on the same data came out bit-identical.
    # Prepare
    monkeypatch.setattr(secrets, "randbits", lambda k: 12345)
    # Execute
    first, second = _trained(), _trained()
    # Assert: the noise has other entropy than those 63 bits
    assert any(not np.array_equal(first[k], second[k]) for k in first)


def test_all_dpsgd_randomness_comes_from_the_given_csprng_stream() -> None:
    # The same AES-CTR key reproduces a run exactly, whatever torch's own generators hold: the
    # noise and the Poisson batches come from that stream and nowhere else.
    key = bytes(range(16))
    torch.manual_seed(1)
    first = _trained(rng=csprng(seed=key))
    torch.manual_seed(2)
    second = _trained(rng=csprng(seed=key))
    other = _trained(rng=csprng(seed=bytes(16)))
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert any(not np.array_equal(first[k], other[k]) for k in first)


def test_the_production_stream_is_aes_ctr_keyed_from_the_os() -> None:
    session = _session()
    bit_generator = session.rng.bit_generator
    assert isinstance(bit_generator, randomgen.AESCounter)
    other = _session().rng.bit_generator
    # a fresh key (its AES round keys differ) for every session
    assert not np.array_equal(other.state["s"]["seed"], bit_generator.state["s"]["seed"])


@pytest.mark.parametrize("secure_mode", [True, False])
def test_the_noise_is_gaussian_with_the_stated_std(secure_mode: bool) -> None:
    # Prepare: a zero gradient, so that the released gradient is the noise alone
    from fl_core.dp._torch_rng import gaussian_like

    reference = torch.zeros(200_000, dtype=torch.float32)
    # Execute
    noise = gaussian_like(reference, std=2.5, rng=csprng(), secure=secure_mode)
    # Assert: shape, dtype, and a Kolmogorov-Smirnov test against N(0, 2.5^2)
    assert noise.shape == reference.shape and noise.dtype == torch.float32
    result = stats.kstest(noise.numpy().astype(np.float64) / 2.5, "norm")
    assert result.pvalue > 1e-4
    assert float(noise.std()) == pytest.approx(2.5, rel=0.01)
    again = gaussian_like(reference, std=2.5, rng=csprng(), secure=secure_mode)
    assert not torch.equal(noise, again)


def test_poisson_batches_have_the_sampling_rate() -> None:
    from fl_core.dp._torch_rng import PoissonBatchSampler

    sampler = PoissonBatchSampler(num_samples=1000, sample_rate=0.05, steps=400, rng=csprng())
    sizes = [len(batch) for batch in sampler]
    assert len(sampler) == len(sizes) == 400
    assert np.mean(sizes) == pytest.approx(50, rel=0.05)
    assert 0 < np.var(sizes) < 2 * 50  # binomial variance n q (1 - q) = 47.5, not a fixed size
