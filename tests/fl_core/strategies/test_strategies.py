from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl_core.config import StrategySection
from fl_core.strategies import FedAdagrad, FedAdam, FedAvg, FedProx, FedYogi, create_strategy

vectors = hnp.arrays(np.float32, st.integers(1, 16), elements=st.floats(-1, 1, width=32))


def _oracle(
    kind: str,
    x: list[float],
    deltas: list[list[float]],
    eta: float,
    b1: float,
    b2: float,
    tau: float,
) -> list[float]:
    """Algorithm 2 of Reddi et al., element by element, in plain Python floats."""
    m = [0.0] * len(x)
    v = [tau * tau] * len(x)
    x = list(x)
    for delta in deltas:
        for i, d in enumerate(delta):
            m[i] = b1 * m[i] + (1 - b1) * d
            if kind == "fedadagrad":
                v[i] = v[i] + d * d
            elif kind == "fedadam":
                v[i] = b2 * v[i] + (1 - b2) * d * d
            else:
                v[i] = v[i] - (1 - b2) * d * d * math.copysign(1.0, v[i] - d * d) * (v[i] != d * d)
            x[i] = float(np.float32(x[i] + eta * m[i] / (math.sqrt(v[i]) + tau)))
    return x


@pytest.mark.parametrize("cls", [FedAdagrad, FedAdam, FedYogi])
@given(x=vectors, data=st.data())
def test_fedopt_matches_algorithm_2(cls: type, x: np.ndarray, data: st.DataObject) -> None:
    deltas = [
        data.draw(hnp.arrays(np.float32, x.shape, elements=st.floats(-1, 1, width=32)))
        for _ in range(3)
    ]
    strategy = cls(server_learning_rate=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    w = x
    for delta in deltas:
        w = strategy.apply(w, delta)
    expected = _oracle(cls.name, x.tolist(), [d.tolist() for d in deltas], 0.1, 0.9, 0.99, 1e-3)
    np.testing.assert_allclose(w, np.array(expected, np.float32), rtol=1e-5, atol=1e-6)


def test_fedopt_state_roundtrip_continues_identically() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=50).astype(np.float32)
    deltas = [rng.normal(size=50).astype(np.float32) for _ in range(4)]
    a = FedAdam(server_learning_rate=0.05)
    for d in deltas[:2]:
        x = a.apply(x, d)
    b = FedAdam(server_learning_rate=0.05)
    b.load_state({k: v.copy() for k, v in a.state().items()})
    np.testing.assert_array_equal(a.apply(x, deltas[2]), b.apply(x, deltas[2]))


def test_fedavg_steps_along_the_mean_update() -> None:
    w = np.array([1.0, 2.0], np.float32)
    u = np.array([0.5, -1.0], np.float32)
    np.testing.assert_array_equal(FedAvg().apply(w, u), [1.5, 1.0])
    np.testing.assert_allclose(FedAvg(server_learning_rate=0.5).apply(w, u), [1.25, 1.5])
    assert FedAvg().state() == {}


def test_fedprox_sends_mu_to_clients() -> None:
    assert FedProx(proximal_mu=0.01).client_config() == {"proximal_mu": 0.01}
    with pytest.raises(ValueError, match="proximal_mu"):
        FedProx(proximal_mu=0.0)


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"])
def test_create_strategy(name: str) -> None:
    section = StrategySection(name=name, proximal_mu=0.1 if name == "fedprox" else 0.0)
    assert create_strategy(section).name == name
