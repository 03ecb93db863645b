"""NumPyClientTrainer: Flower's list-of-arrays API <-> Bulwark's Trainer, every return checked."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from support_flower import LinearNumPyClient

from fl_core.client.pipeline import LocalTrainingFailed
from fl_core.errors import ConfigError
from fl_core.flower import CONFIG_KEYS, NumPyClientTrainer, flower_config
from fl_core.types import FitConfig


class MixedClient:
    """A duck-typed client with float64 weights and an int64 buffer (BatchNorm's counter)."""

    def __init__(self, fit_result: Any = None) -> None:
        self.seen: list[list[np.ndarray]] = []
        self.fit_result = fit_result

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return [np.arange(6, dtype=np.float64).reshape(2, 3), np.array([3], np.int64)]

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        self.seen.append(parameters)
        if self.fit_result is not None:
            return self.fit_result
        return [parameters[0] + 1.0, parameters[1] + 1], 7, {"acc": 0.5, "tag": "x"}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        return 0.25, 3, {"acc": np.float64(0.75)}


def test_weights_are_named_float32_and_go_back_in_the_clients_dtypes() -> None:
    client = MixedClient()
    trainer = NumPyClientTrainer(client, names=["kernel", "count"])
    initial = trainer.initial_weights()
    assert list(initial) == ["kernel", "count"]
    assert all(a.dtype == np.float32 for a in initial.values())
    initial["count"] = np.array([4.6], np.float32)  # averaged counters are rounded back
    result = trainer.fit(initial, FitConfig(round=2))
    sent = client.seen[0]
    assert sent[0].dtype == np.float64 and sent[1].dtype == np.int64
    assert sent[1].tolist() == [5]
    np.testing.assert_array_equal(result.weights["kernel"], np.arange(6).reshape(2, 3) + 1.0)
    assert result.num_examples == 7
    assert result.metrics == {"acc": 0.5}  # the string metric is not a Bulwark metric
    evaluated = trainer.evaluate(initial)
    assert (evaluated.loss, evaluated.num_examples, evaluated.metrics) == (0.25, 3, {"acc": 0.75})


def test_default_names_and_the_round_config_a_flower_client_sees() -> None:
    client = LinearNumPyClient(0)
    trainer = NumPyClientTrainer(client, config={"owner-setting": 3, "local-epochs": 9})
    assert trainer.names == ("param_0", "param_1")
    fit = FitConfig(round=4, epochs=2, learning_rate=0.1, batch_size=16, seed=5)
    trainer.fit(trainer.initial_weights(), fit)
    seen = client.configs[0]
    assert seen["owner-setting"] == 3
    assert seen["local-epochs"] == 2  # the round's own keys take precedence
    assert {k: seen[k] for k in CONFIG_KEYS} == flower_config(fit)
    assert seen["server-round"] == 4 and seen["batch-size"] == 16 and seen["seed"] == 5


@pytest.mark.parametrize(
    ("fit_result", "message"),
    [
        ("not a tuple", "must return \\(parameters, num_examples, metrics\\)"),
        (([np.zeros((2, 3))], 1, {}), "returned 1 arrays; the model has 2"),
        (([np.zeros((3, 2)), np.zeros(1)], 1, {}), "'p0' with shape \\(3, 2\\)"),
        (([np.zeros((2, 3)), np.zeros(1)], -1, {}), "num_examples -1"),
        (([np.zeros((2, 3)), np.zeros(1)], 1.5, {}), "num_examples 1.5"),
        (([np.zeros((2, 3)), np.zeros(1)], 1, None), "metrics of type NoneType"),
        (([np.zeros((2, 3)), "w"], 1, {}), "item 1 of type str"),
        (([np.zeros((2, 3)), np.array(["a"])], 1, {}), "dtype <U1"),
    ],
)
def test_a_bad_fit_result_is_refused_with_what_is_wrong(fit_result: Any, message: str) -> None:
    trainer = NumPyClientTrainer(MixedClient(fit_result), names=["p0", "p1"])
    with pytest.raises(ConfigError, match=message):
        trainer.fit(trainer.initial_weights(), FitConfig(round=1))


def test_non_finite_weights_never_leave_the_owner() -> None:
    bad = ([np.full((2, 3), np.nan), np.zeros(1)], 1, {})
    trainer = NumPyClientTrainer(MixedClient(bad))
    with pytest.raises(LocalTrainingFailed, match="NaN or infinite values in 'param_0'"):
        trainer.fit(trainer.initial_weights(), FitConfig(round=1))


def test_names_must_match_the_clients_parameters() -> None:
    with pytest.raises(ConfigError, match="2 distinct names needed"):
        NumPyClientTrainer(MixedClient(), names=["only-one"])
    with pytest.raises(ConfigError, match="2 distinct names needed"):
        NumPyClientTrainer(MixedClient(), names=["a", "a"])
    trainer = NumPyClientTrainer(MixedClient())
    with pytest.raises(ConfigError, match="weights have names"):
        trainer.fit({"x": np.zeros(1, np.float32)}, FitConfig(round=1))


def test_importing_fl_core_flower_does_not_import_flwr() -> None:
    code = "import sys, fl_core.flower; print('flwr' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fl_core_flower_all_is_exactly_its_public_names() -> None:
    import fl_core.flower as package

    public = {
        n
        for n, v in vars(package).items()
        if not n.startswith("_") and not isinstance(v, type(sys)) and n != "annotations"
    }
    assert sorted(package.__all__) == sorted(public)
    assert all(getattr(package, n) is not None for n in package.__all__)
