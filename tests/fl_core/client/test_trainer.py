from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pytest
import torch

from fl_core.client.trainer import LocalTraining, TorchTrainer, shuffled_batches
from fl_core.data import PartitionConfig, load_dataset, split_for_clients
from fl_core.errors import ConfigError
from fl_core.models import create_model
from fl_core.types import FitConfig, FitResult, Trainer, Weights


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Train these tiny models on one thread (restored afterwards).

    With two OpenMP threads, each of the microsecond-sized ops waits for the other thread; on a
    machine that also runs other processes, that made this module 10-50x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blobs(n: int, *, seed: int, classes: int = 3, features: int = 4):
    """Gaussian blobs: an easy classification problem with real signal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    centres = np.random.default_rng(99).normal(0, 2, size=(classes, features))
    x = (centres[y] + rng.normal(size=(n, features))).astype(np.float32)
    return x, y


def logreg_trainer(*, n_train=64, n_test=40, seed=0, hook=None, task="classification"):
    x, y = blobs(n_train, seed=1)
    xt, yt = blobs(n_test, seed=2)
    classes = 3
    if task == "regression":
        y, yt, classes = x[:, 0] * 2.0 - x[:, 1], xt[:, 0] * 2.0 - xt[:, 1], 1
        y, yt = y.astype(np.float32), yt.astype(np.float32)
    model_fn = partial(create_model, "logreg", input_shape=(4,), num_classes=classes)
    return TorchTrainer(
        model_fn, x_train=x, y_train=y, x_test=xt, y_test=yt, task=task, seed=seed, hook=hook
    )


def assert_weights_identical(a: Weights, b: Weights) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == np.float32 and b[name].dtype == np.float32
        assert a[name].tobytes() == b[name].tobytes(), name


CONFIG = FitConfig(round=1, epochs=2, batch_size=8, learning_rate=0.1, seed=5)


def test_is_a_trainer():
    trainer: Trainer = logreg_trainer()
    assert isinstance(trainer.initial_weights(), dict)


def test_initial_weights_are_seeded_and_copies():
    a, b, c = logreg_trainer(seed=3), logreg_trainer(seed=3), logreg_trainer(seed=4)
    assert_weights_identical(a.initial_weights(), b.initial_weights())
    assert not np.array_equal(
        a.initial_weights()["linear.weight"], c.initial_weights()["linear.weight"]
    )
    w = a.initial_weights()
    w["linear.weight"][:] = 0
    assert a.initial_weights()["linear.weight"].any()


def test_fit_is_bit_identical_for_the_same_inputs_and_leaves_global_rng_alone():
    # Prepare
    x, y = blobs(300, seed=1)
    x = np.repeat(x.reshape(300, 1, 2, 2), 2, axis=2).repeat(2, axis=3)  # 1x4x4 images
    model_fn = partial(create_model, "cnn", input_shape=(1, 4, 4), num_classes=3)

    def run() -> FitResult:
        trainer = TorchTrainer(model_fn, x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
        return trainer.fit(trainer.initial_weights(), CONFIG)

    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    # Execute
    first, second = run(), run()
    # Assert
    assert torch.equal(torch.random.get_rng_state(), state)
    assert_weights_identical(first.weights, second.weights)
    assert first.metrics == second.metrics
    assert first.num_examples == 300


def test_same_trainer_refits_identically_and_seed_or_round_change_the_order():
    trainer = logreg_trainer()
    w0 = trainer.initial_weights()
    a = trainer.fit(w0, CONFIG)
    b = trainer.fit(w0, CONFIG)
    c = trainer.fit(w0, dataclasses.replace(CONFIG, seed=6))
    d = trainer.fit(w0, dataclasses.replace(CONFIG, round=2))
    assert_weights_identical(a.weights, b.weights)
    for other in (c, d):
        assert not np.array_equal(a.weights["linear.weight"], other.weights["linear.weight"])


def test_fit_returns_float32_copies_in_state_dict_order():
    trainer = logreg_trainer()
    w0 = trainer.initial_weights()
    result = trainer.fit(w0, CONFIG)
    assert list(result.weights) == ["linear.weight", "linear.bias"]
    snapshot = {k: v.copy() for k, v in result.weights.items()}
    result.weights["linear.weight"][:] = 42.0  # the caller owns the arrays
    w0["linear.bias"][:] = 42.0
    assert_weights_identical(trainer.fit(trainer.initial_weights(), CONFIG).weights, snapshot)


def sgd_oracle(x, y, w, b, *, lr, mu, steps):
    """Full-batch SGD on mean cross-entropy plus mu/2 ||theta - theta_0||^2, by hand."""
    w, b = torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    w0, b0 = w.clone(), b.clone()
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y)
    for _ in range(steps):
        p = torch.softmax(x @ w.T + b, dim=1)
        p[torch.arange(len(y)), y] -= 1.0
        grad_w, grad_b = p.T @ x / len(y), p.sum(0) / len(y)
        w, b = w - lr * (grad_w + mu * (w - w0)), b - lr * (grad_b + mu * (b - b0))
    return w.numpy(), b.numpy()


@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_full_batch_sgd_with_fedprox_matches_a_manual_computation(mu):
    # Prepare
    trainer = logreg_trainer(n_train=64)
    w0 = trainer.initial_weights()
    w0["linear.weight"] += 0.3  # start away from the initialisation
    x, y = blobs(64, seed=1)
    config = FitConfig(round=1, epochs=3, batch_size=64, learning_rate=0.5, proximal_mu=mu)
    # Execute
    result = trainer.fit(w0, config)
    # Assert
    w, b = sgd_oracle(x, y, w0["linear.weight"], w0["linear.bias"], lr=0.5, mu=mu, steps=3)
    np.testing.assert_allclose(result.weights["linear.weight"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.weights["linear.bias"], b, rtol=1e-5, atol=1e-6)


def test_proximal_term_keeps_the_weights_near_the_global_model():
    trainer = logreg_trainer()
    w0 = trainer.initial_weights()
    distance = {}
    for mu in (0.0, 1.0, 10.0):
        new = trainer.fit(w0, dataclasses.replace(CONFIG, epochs=5, proximal_mu=mu)).weights
        distance[mu] = sum(float(np.sum((new[k] - w0[k]) ** 2)) for k in w0)
    assert distance[0.0] > distance[1.0] > distance[10.0] > 0


def test_max_steps_stops_early():
    trainer = logreg_trainer(n_train=64)
    w0 = trainer.initial_weights()
    one_step = trainer.fit(w0, dataclasses.replace(CONFIG, epochs=5, max_steps=1))
    manual = trainer.fit(w0, dataclasses.replace(CONFIG, epochs=1, batch_size=8, max_steps=1))
    assert_weights_identical(one_step.weights, manual.weights)
    full = trainer.fit(w0, dataclasses.replace(CONFIG, epochs=5))
    assert not np.array_equal(one_step.weights["linear.weight"], full.weights["linear.weight"])


def test_evaluate_matches_a_manual_computation():
    # Prepare
    trainer = logreg_trainer(n_test=40)
    weights = trainer.fit(trainer.initial_weights(), CONFIG).weights
    xt, yt = blobs(40, seed=2)
    # Execute
    result = trainer.evaluate(weights)
    # Assert
    logits = xt.astype(np.float64) @ weights["linear.weight"].T + weights["linear.bias"]
    log_z = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    loss = float(np.mean(log_z - logits[np.arange(40), yt]))
    accuracy = float(np.mean(logits.argmax(1) == yt))
    assert result.num_examples == 40
    assert result.loss == pytest.approx(loss, rel=1e-5)
    assert result.metrics == {"accuracy": pytest.approx(accuracy)}


def test_evaluate_in_small_batches_equals_one_batch():
    x, y = blobs(50, seed=1)
    model_fn = partial(create_model, "mlp", input_shape=(4,), num_classes=3)
    kwargs = {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    big = TorchTrainer(model_fn, **kwargs)
    small = TorchTrainer(model_fn, eval_batch_size=7, **kwargs)
    a, b = big.evaluate(big.initial_weights()), small.evaluate(small.initial_weights())
    assert a.loss == pytest.approx(b.loss, rel=1e-6)
    assert a.metrics == b.metrics


def test_regression_reports_mse_and_learns():
    trainer = logreg_trainer(task="regression")
    w0 = trainer.initial_weights()
    before = trainer.evaluate(w0)
    fit = trainer.fit(w0, dataclasses.replace(CONFIG, epochs=20, learning_rate=0.05))
    after = trainer.evaluate(fit.weights)
    assert set(fit.metrics) == {"loss", "mse"} and set(after.metrics) == {"mse"}
    assert after.metrics["mse"] == after.loss
    assert after.loss < 0.01 * before.loss
    xt, _ = blobs(40, seed=2)
    target = xt[:, 0] * 2.0 - xt[:, 1]
    pred = xt @ fit.weights["linear.weight"].T[:, 0] + fit.weights["linear.bias"][0]
    assert after.loss == pytest.approx(float(np.mean((pred - target) ** 2)), rel=1e-4)


def test_federated_training_on_digits_learns():
    # Prepare: 3 clients with a digits split, plain FedAvg for 3 rounds
    ds = load_dataset("digits")
    shares = split_for_clients(ds, PartitionConfig(num_clients=3), rng=np.random.default_rng(0))
    model_fn = partial(create_model, "mlp", input_shape=ds.input_shape, num_classes=10)
    trainers = [TorchTrainer.from_client_data(model_fn, s) for s in shares]
    weights = trainers[0].initial_weights()
    # Execute
    for r in range(1, 4):
        config = FitConfig(round=r, epochs=2, batch_size=32, learning_rate=0.1, momentum=0.9)
        results = [t.fit(weights, config) for t in trainers]
        total = sum(res.num_examples for res in results)
        weights = {
            k: np.sum(
                [res.weights[k] * (res.num_examples / total) for res in results], axis=0
            ).astype(np.float32)
            for k in weights
        }
    evals = [t.evaluate(weights) for t in trainers]
    # Assert: accuracy over the whole test split (example-weighted over clients)
    accuracy = sum(e.metrics["accuracy"] * e.num_examples for e in evals) / ds.num_test
    assert sum(e.num_examples for e in evals) == ds.num_test
    assert accuracy > 0.9
    assert all(0.0 <= res.metrics["accuracy"] <= 1.0 for res in results)


def test_regression_needs_a_single_output():
    x, _ = blobs(10, seed=0)
    y = x[:, 0].copy()
    model_fn = partial(create_model, "logreg", input_shape=(4,), num_classes=2)
    trainer = TorchTrainer(model_fn, x_train=x, y_train=y, x_test=x, y_test=y, task="regression")
    with pytest.raises(ConfigError, match=r"output shape \(batch, 1\), got \(10, 2\)"):
        trainer.evaluate(trainer.initial_weights())


def test_adam_trains():
    trainer = logreg_trainer()
    w0 = trainer.initial_weights()
    fit = trainer.fit(w0, dataclasses.replace(CONFIG, optimizer="adam", learning_rate=0.05))
    assert trainer.evaluate(fit.weights).loss < trainer.evaluate(w0).loss


class RecordingHook:
    """Replaces the sampler by a fixed order and reports one metric."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def prepare(self, plan: LocalTraining, config: FitConfig) -> LocalTraining:
        self.calls.append("prepare")
        assert plan.num_examples == 64
        if self.fail:
            plan.sampler = lambda generator: [torch.tensor([0, 1]), torch.tensor([1000])]
        else:
            plan.sampler = lambda generator: torch.arange(64).split(16)
        return plan

    def finish(self, plan: LocalTraining) -> dict[str, float]:
        self.calls.append("finish")
        return {"hooked": 1.0}


def test_hook_can_replace_the_sampler_and_add_metrics():
    hook = RecordingHook()
    trainer = logreg_trainer(hook=hook)
    result = trainer.fit(trainer.initial_weights(), CONFIG)
    assert hook.calls == ["prepare", "finish"]
    assert result.metrics["hooked"] == 1.0
    assert {"loss", "accuracy"} <= set(result.metrics)


def test_hook_finish_runs_even_when_training_fails():
    hook = RecordingHook(fail=True)
    trainer = logreg_trainer(hook=hook)
    with pytest.raises(IndexError):
        trainer.fit(trainer.initial_weights(), CONFIG)
    assert hook.calls == ["prepare", "finish"]


def test_shuffled_batches_cover_every_example_once_per_epoch():
    batches = list(shuffled_batches(10, 4)(torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"linear.weight": None}, "missing \\['linear.weight'\\]"),
        ({"extra": np.zeros(1, np.float32)}, "unexpected \\['extra'\\]"),
        ({"linear.bias": np.zeros(4, np.float32)}, "has shape \\(4,\\), the model needs \\(3,\\)"),
        ({"linear.bias": np.zeros(3, np.float64)}, "must be a float32 numpy array, got float64"),
        ({"linear.bias": np.array([0, np.nan, 0], np.float32)}, "NaN or infinite"),
    ],
)
def test_weights_that_do_not_fit_the_model_are_rejected(change, message):
    trainer = logreg_trainer()
    weights = trainer.initial_weights()
    for name, value in change.items():
        if value is None:
            del weights[name]
        else:
            weights[name] = value
    with pytest.raises(ConfigError, match=message):
        trainer.fit(weights, CONFIG)
    with pytest.raises(ConfigError, match=message):
        trainer.evaluate(weights)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("batch_size", 0),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("momentum", 1.0),
        ("optimizer", "lbfgs"),
        ("proximal_mu", -1.0),
        ("seed", -1),
        ("max_steps", -1),
    ],
)
def test_fit_config_out_of_range_is_rejected(field, value):
    trainer = logreg_trainer()
    with pytest.raises(ConfigError, match=f"FitConfig.{field} must be"):
        trainer.fit(trainer.initial_weights(), dataclasses.replace(CONFIG, **{field: value}))


def test_constructor_checks_the_arrays():
    model_fn = partial(create_model, "logreg", input_shape=(4,), num_classes=3)
    x, y = blobs(10, seed=0)
    ok = {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    cases = [
        ({"y_train": y[:5]}, r"y_train has shape \(5,\)"),
        ({"x_train": x[:0], "y_train": y[:0]}, "n >= 1"),
        ({"x_test": np.full_like(x, np.inf)}, "x_test contains NaN or infinite"),
        ({"y_train": y.astype(np.float32)}, "integer class labels"),
        ({"y_train": y - 5}, "negative label"),
        ({"x_test": x[:, :3]}, "example shapes differ"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            TorchTrainer(model_fn, **{**ok, **change})
    with pytest.raises(ConfigError, match="task must be one of"):
        TorchTrainer(model_fn, task="ranking", **ok)
