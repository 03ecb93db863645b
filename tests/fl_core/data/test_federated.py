from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl_core.data.datasets import Dataset, load_dataset
from fl_core.data.federated import ClientData, split_for_clients, standardize_locally
from fl_core.data.partition import PARTITION_SCHEMES, PartitionConfig
from fl_core.errors import ConfigError


def indexed_dataset(n_train: int = 300, n_test: int = 70, *, standardize: bool = False) -> Dataset:
    """Feature 0 of each example is its index in its split, so shares can be traced back."""
    rng = np.random.default_rng(0)
    return Dataset(
        name="indexed",
        x_train=np.stack([np.arange(n_train), rng.normal(size=n_train)], 1).astype(np.float32),
        y_train=rng.integers(0, 3, size=n_train),
        x_test=np.stack([np.arange(n_test), rng.normal(size=n_test)], 1).astype(np.float32),
        y_test=rng.integers(0, 3, size=n_test),
        num_classes=3,
        input_shape=(2,),
        task="classification",
        standardize_features=standardize,
    )


@given(
    scheme=st.sampled_from(PARTITION_SCHEMES),
    num_clients=st.integers(1, 10),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_train_and_test_example_goes_to_exactly_one_client(scheme, num_clients, seed):
    # Prepare
    ds = indexed_dataset()
    config = PartitionConfig(scheme=scheme, num_clients=num_clients, alpha=0.5, max_attempts=1000)
    # Execute
    clients = split_for_clients(ds, config, rng=np.random.default_rng(seed))
    # Assert
    assert len(clients) == num_clients
    for split, n in (("train", ds.num_train), ("test", ds.num_test)):
        ids = np.concatenate([getattr(c, f"x_{split}")[:, 0] for c in clients]).astype(int)
        np.testing.assert_array_equal(np.sort(ids), np.arange(n))
        for c in clients:  # labels travel with their examples
            x, y = getattr(c, f"x_{split}"), getattr(c, f"y_{split}")
            np.testing.assert_array_equal(y, getattr(ds, f"y_{split}")[x[:, 0].astype(int)])
    sizes = [c.num_test for c in clients]
    assert max(sizes) - min(sizes) <= 1  # the test split is IID


def test_example_weighted_client_accuracy_equals_full_test_accuracy():
    # Prepare: a fixed linear classifier, evaluated per client and on the whole test set
    ds = indexed_dataset()
    weights = np.array([[0.01, 1.0], [-0.02, 0.5], [0.0, -1.0]], dtype=np.float32)
    clients = split_for_clients(
        ds, PartitionConfig(scheme="dirichlet", num_clients=7), rng=np.random.default_rng(5)
    )

    def accuracy(x, y):
        return float(np.mean(np.argmax(x @ weights.T, axis=1) == y))

    # Execute
    weighted = sum(accuracy(c.x_test, c.y_test) * c.num_test for c in clients) / ds.num_test
    # Assert
    assert weighted == pytest.approx(accuracy(ds.x_test, ds.y_test), abs=1e-12)


def test_standardize_locally_uses_only_the_training_statistics():
    # Prepare
    rng = np.random.default_rng(0)
    x_train = rng.normal(5.0, 3.0, size=(40, 4)).astype(np.float32)
    x_train[:, 3] = 7.0  # a constant feature
    x_test = rng.normal(5.0, 3.0, size=(9, 4)).astype(np.float32)
    # Execute
    s_train, s_test = standardize_locally(x_train, x_test)
    # Assert
    assert s_train.dtype == np.float32 and s_test.dtype == np.float32
    np.testing.assert_allclose(s_train[:, :3].mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(s_train[:, :3].std(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(s_train[:, 3], 0.0)
    mean, std = x_train.astype(np.float64).mean(0), x_train.astype(np.float64).std(0)
    np.testing.assert_allclose(s_test[:, :3], (x_test[:, :3] - mean[:3]) / std[:3], rtol=1e-5)
    np.testing.assert_allclose(s_test[:, 3], x_test[:, 3] - 7.0, rtol=1e-6)


def test_each_client_standardises_with_its_own_statistics():
    # Prepare
    ds = load_dataset("breast_cancer")
    config = PartitionConfig(num_clients=5)
    # Execute
    raw = split_for_clients(ds, config, rng=np.random.default_rng(1), standardize=False)
    auto = split_for_clients(ds, config, rng=np.random.default_rng(1))
    # Assert: the default follows Dataset.standardize_features, and uses no pooled statistics
    for r, a in zip(raw, auto, strict=True):
        expected_train, expected_test = standardize_locally(r.x_train, r.x_test)
        np.testing.assert_array_equal(a.x_train, expected_train)
        np.testing.assert_array_equal(a.x_test, expected_test)
        np.testing.assert_array_equal(a.y_train, r.y_train)


def test_standardize_locally_rejects_bad_input():
    with pytest.raises(ConfigError, match="empty training split"):
        standardize_locally(np.zeros((0, 3), np.float32), np.zeros((1, 3), np.float32))
    with pytest.raises(ConfigError, match="example shapes differ"):
        standardize_locally(np.zeros((2, 3), np.float32), np.zeros((1, 2), np.float32))


def test_client_data_checks_lengths():
    with pytest.raises(ConfigError, match=r"ClientData.y_test has shape \(2,\)"):
        ClientData(
            x_train=np.zeros((1, 2), np.float32),
            y_train=np.zeros(1),
            x_test=np.zeros((1, 2), np.float32),
            y_test=np.zeros(2),
        )
