"""Tests for mpc.secagg.graph: regular, symmetric neighbour graphs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpc import ParameterError
from mpc.secagg.graph import build_graph


@given(n=st.integers(4, 40), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_harary_graph_is_k_regular_symmetric_and_loop_free(
    n: int, data: st.DataObject, seed: int
) -> None:
    # Prepare
    degree = data.draw(st.sampled_from(list(range(2, n - 1, 2))))
    participants = [3 * i + 1 for i in range(n)]

    # Execute
    graph = build_graph(participants, degree=degree, rng=np.random.default_rng(seed))

    # Assert
    assert set(graph) == set(participants)
    for u, neighbours in graph.items():
        assert len(neighbours) == degree and len(set(neighbours)) == degree
        assert u not in neighbours and list(neighbours) == sorted(neighbours)
        assert all(u in graph[v] for v in neighbours)


def test_complete_graph_connects_everyone() -> None:
    graph = build_graph([5, 1, 9], degree=2)
    assert graph == {1: (5, 9), 5: (1, 9), 9: (1, 5)}


def test_csprng_permutation_differs_between_calls() -> None:
    participants = list(range(1, 65))
    graphs = {tuple(sorted(build_graph(participants, degree=4).items())) for _ in range(5)}
    assert len(graphs) > 1


def test_injected_generator_makes_the_graph_reproducible() -> None:
    a = build_graph(range(1, 30), degree=6, rng=np.random.default_rng(1))
    b = build_graph(range(1, 30), degree=6, rng=np.random.default_rng(1))
    assert a == b


@pytest.mark.parametrize("degree", [0, 1, 3, 7, 10])
def test_invalid_degrees_are_refused(degree: int) -> None:
    with pytest.raises(ParameterError, match="degree"):
        build_graph(range(1, 11), degree=degree)


def test_duplicate_participants_are_refused() -> None:
    with pytest.raises(ParameterError, match="distinct"):
        build_graph([1, 1, 2], degree=2)
