"""Neighbour graphs: the complete graph (SecAgg) and a random Harary graph (SecAgg+).

Bell et al. CCS 2020, section 4, and Google fcp's production choice: place the clients on a ring
in a uniformly random order and connect each to the k/2 nearest clients on either side (the Harary
graph H_{k,n} under a random permutation). Every client then has exactly k neighbours, the
relation is symmetric, and the bounds of ``mpc.secagg._bounds`` apply.

Threat model: the coordinator draws the permutation. Against a semi-honest coordinator it is
uniform; a coordinator that picks a client's neighbourhood from colluding clients is outside the
model (Bell et al. handle it with a jointly generated graph, which is not implemented). The
permutation comes from the OS CSPRNG (``secrets.SystemRandom``) unless a generator is injected
for reproducible tests.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from mpc.errors import ParameterError


def build_graph(
    participants: Sequence[int],
    *,
    degree: int,
    rng: np.random.Generator | None = None,
) -> dict[int, tuple[int, ...]]:
    """Return each participant's neighbours (increasing) in a graph of the given degree.

    Args:
        participants: distinct client indices.
        degree: ``len(participants) - 1`` for the complete graph, else an even k in [2, n - 2].
        rng: a generator for the random order (tests); None draws it from the OS CSPRNG.

    Returns:
        index -> sorted tuple of neighbour indices; symmetric, without self-loops.

    Raises:
        ParameterError: for duplicate participants or an invalid degree.
    """
    nodes = list(participants)
    n = len(nodes)
    if len(set(nodes)) != n:
        raise ParameterError("participants must be distinct")
    if degree == n - 1:
        everyone = tuple(sorted(nodes))
        return {u: tuple(v for v in everyone if v != u) for u in nodes}
    if degree % 2 or not 2 <= degree <= n - 2:
        raise ParameterError(
            f"degree must be {n - 1} (complete graph) or an even number in [2, {n - 2}], "
            f"got {degree}"
        )
    if rng is None:
        order = sorted(nodes)
        secrets.SystemRandom().shuffle(order)
    else:
        order = [nodes[i] for i in rng.permutation(n)]
    half = degree // 2
    graph: dict[int, tuple[int, ...]] = {}
    for position, u in enumerate(order):
        around = [order[(position + offset) % n] for offset in range(-half, half + 1) if offset]
        graph[u] = tuple(sorted(around))
    return graph
