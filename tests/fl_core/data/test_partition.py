from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fl_core.data.partition import (
    PARTITION_SCHEMES,
    PartitionConfig,
    dirichlet,
    iid,
    partition,
    quantity_skew,
)
from fl_core.errors import ConfigError

seeds = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def labelled(draw):
    """Labels of 1-8 classes, some possibly tiny, and a feasible (num_clients, min_size)."""
    counts = draw(st.lists(st.integers(1, 60), min_size=1, max_size=8))
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = np.random.default_rng(draw(seeds)).permutation(labels)
    num_clients = draw(st.integers(1, min(12, len(labels))))
    min_size = draw(st.integers(1, max(1, min(3, len(labels) // num_clients))))
    return labels, num_clients, min_size


def assert_exact_partition(parts, n, *, num_clients, min_size):
    assert len(parts) == num_clients
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)  # sorted, no duplicates within a client
        assert len(part) >= min_size
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


@given(data=labelled(), seed=seeds, scheme=st.sampled_from(PARTITION_SCHEMES))
def test_every_scheme_is_an_exact_deterministic_partition(data, seed, scheme):
    # Prepare: dirichlet resamples until every client has min_size examples, which is hopeless
    # when the examples barely suffice (P(all of k Dir(1) shares > m/n) = (1 - k*m/n)^(k-1)).
    labels, num_clients, min_size = data
    assume(scheme != "dirichlet" or len(labels) >= 4 * num_clients * min_size)
    config = PartitionConfig(
        scheme=scheme, num_clients=num_clients, alpha=1.0, min_size=min_size, max_attempts=1000
    )
    # Execute
    first = partition(labels, config, rng=np.random.default_rng(seed))
    again = partition(labels, config, rng=np.random.default_rng(seed))
    # Assert
    assert_exact_partition(first, len(labels), num_clients=num_clients, min_size=min_size)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


@given(seed=seeds)
def test_different_seeds_give_different_partitions(seed):
    labels = np.repeat(np.arange(10), 50)
    config = PartitionConfig(scheme="dirichlet", num_clients=5, alpha=0.5)
    a = partition(labels, config, rng=np.random.default_rng(seed))
    b = partition(labels, config, rng=np.random.default_rng(seed + 1))
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def mean_label_skew(labels, parts):
    """Mean over clients of the total variation distance to the global label distribution."""
    classes = labels.max() + 1
    overall = np.bincount(labels, minlength=classes) / len(labels)
    return float(
        np.mean(
            [
                0.5 * np.abs(np.bincount(labels[p], minlength=classes) / len(p) - overall).sum()
                for p in parts
            ]
        )
    )


@given(seed=seeds)
def test_dirichlet_label_skew_grows_as_alpha_shrinks(seed):
    # Prepare: 10 balanced classes, 10 clients. Over seeds 0-2999 the skew ranges were disjoint:
    # alpha 0.05: 0.67-0.85, 0.5: 0.36-0.55, 100: 0.09-0.16 (multinomial noise of ~100 examples).
    labels = np.repeat(np.arange(10), 100)
    # Execute
    skews = [
        mean_label_skew(
            labels, dirichlet(labels, num_clients=10, alpha=a, rng=np.random.default_rng(seed))
        )
        for a in (0.05, 0.5, 100.0)
    ]
    # Assert
    assert skews == sorted(skews, reverse=True)
    assert skews[0] > 0.6 and skews[-1] < 0.25


@given(seed=seeds)
def test_quantity_skew_spreads_sizes_as_alpha_shrinks(seed):
    # Coefficient of variation of the sizes over seeds 0-4999: alpha 0.1: 0.78-3.0;
    # alpha 1000: 0.01-0.09.
    labels = np.zeros(10_000, dtype=np.int64)
    spread = {}
    for alpha in (0.1, 1000.0):
        parts = quantity_skew(labels, num_clients=10, alpha=alpha, rng=np.random.default_rng(seed))
        spread[alpha] = np.std([len(p) for p in parts]) / 1000
    assert spread[0.1] > 0.4
    assert spread[1000.0] < 0.2


@given(n=st.integers(1, 500), num_clients=st.integers(1, 20), seed=seeds)
def test_iid_sizes_differ_by_at_most_one(n, num_clients, seed):
    labels = np.zeros(max(n, num_clients), dtype=np.int64)
    parts = iid(labels, num_clients=num_clients, rng=np.random.default_rng(seed))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_fails_clearly_when_min_size_cannot_be_met():
    labels = np.repeat(np.arange(10), 10)
    with pytest.raises(ConfigError, match=r"min_size=9 .* all 5 attempts; lower min_size"):
        dirichlet(
            labels,
            num_clients=10,
            alpha=0.01,
            rng=np.random.default_rng(0),
            min_size=9,
            max_attempts=5,
        )


def test_dirichlet_can_give_any_client_an_example_of_a_small_class():
    # One example per class and two clients: rounding shares down would always give both
    # examples to the last client, so min_size=1 could never be met.
    labels = np.array([0, 1])
    parts = dirichlet(labels, num_clients=2, alpha=1.0, rng=np.random.default_rng(0), min_size=1)
    assert [len(p) for p in parts] == [1, 1]


def test_dirichlet_resamples_until_min_size_holds():
    labels = np.repeat(np.arange(10), 20)
    parts = dirichlet(labels, num_clients=10, alpha=0.3, rng=np.random.default_rng(0), min_size=10)
    assert min(len(p) for p in parts) >= 10


def test_too_few_examples_for_min_size():
    with pytest.raises(ConfigError, match="at least min_size=3 examples each from 8"):
        iid(np.zeros(8), num_clients=3, rng=np.random.default_rng(0), min_size=3)


def test_dirichlet_needs_integer_labels():
    with pytest.raises(ConfigError, match="integer class labels"):
        dirichlet(np.zeros(10), num_clients=2, alpha=1.0, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scheme": "shards"}, "PartitionConfig.scheme"),
        ({"num_clients": 0}, "num_clients must be >= 1"),
        ({"alpha": 0.0}, "alpha must be a finite number > 0"),
        ({"alpha": float("inf")}, "alpha must be a finite number > 0"),
        ({"min_size": 0}, "min_size must be >= 1"),
        ({"max_attempts": 0}, "PartitionConfig.max_attempts"),
    ],
)
def test_partition_config_validates(fields, message):
    with pytest.raises(ConfigError, match=message):
        PartitionConfig(**{"num_clients": 2, **fields})


def test_labels_must_be_one_dimensional():
    with pytest.raises(ConfigError, match="one-dimensional"):
        iid(np.zeros((4, 2)), num_clients=2, rng=np.random.default_rng(0))
