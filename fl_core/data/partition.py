"""Seeded partitioners: how a data set's examples are dealt out to simulated data owners.

Every partitioner takes the labels (only their number matters for ``iid`` and
``quantity_skew``), the number of clients and an injected :class:`numpy.random.Generator`, and
returns one sorted int64 index array per client. Together the arrays are an exact partition of
``range(len(labels))``: every example goes to exactly one client. Each client gets at least
``min_size`` examples; a scheme that cannot guarantee it by construction resamples, and fails
with a :class:`ConfigError` after ``max_attempts`` draws.

Schemes (the non-IID settings of Li, Diao, Chen and He, "Federated Learning on Non-IID Data Silos:
An Experimental Study", ICDE 2022, section IV):

- ``iid``: a uniformly random permutation cut into near-equal parts.
- ``dirichlet``: label skew. For each class c, a share vector ``p_c ~ Dir(alpha * 1)`` over the
  clients, and each example of class c goes to client i with probability ``p_c[i]`` (Hsu, Qi and
  Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
  Classification", 2019). Small ``alpha`` gives each client few classes; large ``alpha``
  approaches IID. The counts are drawn (multinomial), not rounded: rounding ``n_c * p_c`` down,
  as many implementations do, always hands a class's remainder to the last clients, so a client
  early in the order can never receive a class with fewer examples than clients.
- ``quantity_skew``: size skew with IID labels. Client sizes are ``min_size`` plus a multinomial
  share of the rest with proportions ``q ~ Dir(alpha * 1)``; small ``alpha`` gives very unequal
  sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fl_core.errors import ConfigError

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MIN_SIZE",
    "PARTITION_SCHEMES",
    "PartitionConfig",
    "dirichlet",
    "iid",
    "partition",
    "quantity_skew",
]

PARTITION_SCHEMES = ("iid", "dirichlet", "quantity_skew")
"""The names :func:`partition` accepts."""

DEFAULT_ALPHA = 0.5
"""Default Dirichlet concentration of ``dirichlet`` and ``quantity_skew``."""

DEFAULT_MIN_SIZE = 1
"""Default minimum number of examples per client."""

DEFAULT_MAX_ATTEMPTS = 100
"""Default number of draws ``dirichlet`` makes before giving up on ``min_size``."""

IndexArrays = list[npt.NDArray[np.int64]]


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionConfig:
    """How to split a data set's training examples among clients.

    Attributes:
        scheme: one of :data:`PARTITION_SCHEMES`.
        num_clients: number of clients (>= 1).
        alpha: Dirichlet concentration for ``dirichlet`` and ``quantity_skew`` (> 0, finite).
        min_size: minimum number of examples per client (>= 1).
        max_attempts: draws ``dirichlet`` makes before failing on ``min_size`` (>= 1).
    """

    scheme: str = "iid"
    num_clients: int
    alpha: float = DEFAULT_ALPHA
    min_size: int = DEFAULT_MIN_SIZE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def __post_init__(self) -> None:
        if self.scheme not in PARTITION_SCHEMES:
            raise ConfigError(
                f"PartitionConfig.scheme must be one of {PARTITION_SCHEMES}, got {self.scheme!r}"
            )
        _check_common(self.num_clients, self.min_size)
        _check_alpha(self.alpha)
        if self.max_attempts < 1:
            raise ConfigError(f"PartitionConfig.max_attempts must be >= 1, got {self.max_attempts}")


def partition(
    labels: npt.NDArray[np.generic], config: PartitionConfig, *, rng: np.random.Generator
) -> IndexArrays:
    """Split ``range(len(labels))`` among clients as ``config`` says.

    Args:
        labels: one label per example (integer class labels for ``dirichlet``).
        config: the scheme and its parameters.
        rng: the source of randomness (seed it for a reproducible split).

    Returns:
        One sorted int64 index array per client.

    Raises:
        ConfigError: the data cannot be split with these parameters.
    """
    if config.scheme == "iid":
        return iid(labels, num_clients=config.num_clients, rng=rng, min_size=config.min_size)
    if config.scheme == "dirichlet":
        return dirichlet(
            labels,
            num_clients=config.num_clients,
            alpha=config.alpha,
            rng=rng,
            min_size=config.min_size,
            max_attempts=config.max_attempts,
        )
    return quantity_skew(
        labels,
        num_clients=config.num_clients,
        alpha=config.alpha,
        rng=rng,
        min_size=config.min_size,
    )


def iid(
    labels: npt.NDArray[np.generic],
    *,
    num_clients: int,
    rng: np.random.Generator,
    min_size: int = DEFAULT_MIN_SIZE,
) -> IndexArrays:
    """Deal a random permutation out in parts whose sizes differ by at most one.

    Raises:
        ConfigError: fewer than ``num_clients * min_size`` examples.
    """
    n = _num_examples(labels, num_clients=num_clients, min_size=min_size)
    order = rng.permutation(n)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_clients)]


def dirichlet(
    labels: npt.NDArray[np.generic],
    *,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = DEFAULT_MIN_SIZE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> IndexArrays:
    """Label skew: each class is dealt out with proportions drawn from ``Dir(alpha)``.

    A draw in which some client gets fewer than ``min_size`` examples is discarded and redrawn,
    as in the reference implementation of Li et al. (ICDE 2022).

    Raises:
        ConfigError: the labels are not integer classes, there are too few examples, or no draw
            out of ``max_attempts`` met ``min_size`` (lower ``min_size`` or raise ``alpha``).
    """
    n = _num_examples(labels, num_clients=num_clients, min_size=min_size)
    _check_alpha(alpha)
    if max_attempts < 1:
        raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"dirichlet partitioning needs integer class labels, got {labels.dtype}")
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    concentration = np.full(num_clients, alpha, dtype=np.float64)
    smallest = 0
    for _ in range(max_attempts):
        parts: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(num_clients)]
        for indices in members:
            shares = _normalised(rng.dirichlet(concentration))
            counts = rng.multinomial(len(indices), shares)
            chunks = np.split(rng.permutation(indices), np.cumsum(counts)[:-1])
            for client, chunk in enumerate(chunks):
                parts[client].append(chunk)
        sizes = [sum(len(c) for c in p) for p in parts]
        smallest = min(sizes)
        if smallest >= min_size:
            return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
    raise ConfigError(
        f"dirichlet partitioning of {n} examples into {num_clients} clients with alpha={alpha} "
        f"left a client with {smallest} < min_size={min_size} examples in all {max_attempts} "
        f"attempts; lower min_size or raise alpha"
    )


def quantity_skew(
    labels: npt.NDArray[np.generic],
    *,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = DEFAULT_MIN_SIZE,
) -> IndexArrays:
    """Size skew: client sizes follow ``Dir(alpha)`` proportions on top of ``min_size`` each.

    Raises:
        ConfigError: fewer than ``num_clients * min_size`` examples, or ``alpha`` out of range.
    """
    n = _num_examples(labels, num_clients=num_clients, min_size=min_size)
    _check_alpha(alpha)
    shares = rng.dirichlet(np.full(num_clients, alpha, dtype=np.float64))
    sizes = min_size + rng.multinomial(n - num_clients * min_size, _normalised(shares))
    order = rng.permutation(n)
    return [np.sort(part).astype(np.int64) for part in np.split(order, np.cumsum(sizes)[:-1])]


def _normalised(shares: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Shares that sum to 1 within numpy's multinomial tolerance (guards against round-off)."""
    shares = np.clip(shares, 0.0, None)
    total = shares.sum()
    if not total > 0:  # every share underflowed to 0 (tiny alpha): fall back to uniform
        return np.full(len(shares), 1.0 / len(shares))
    normalised: npt.NDArray[np.float64] = shares / total
    return normalised


def _num_examples(labels: npt.NDArray[np.generic], *, num_clients: int, min_size: int) -> int:
    _check_common(num_clients, min_size)
    if labels.ndim != 1:
        raise ConfigError(f"labels must be one-dimensional, got shape {labels.shape}")
    n = int(labels.shape[0])
    if n < num_clients * min_size:
        raise ConfigError(
            f"cannot give {num_clients} clients at least min_size={min_size} examples each from "
            f"{n} examples"
        )
    return n


def _check_common(num_clients: int, min_size: int) -> None:
    if num_clients < 1:
        raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
    if min_size < 1:
        raise ConfigError(f"min_size must be >= 1, got {min_size}")


def _check_alpha(alpha: float) -> None:
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alpha must be a finite number > 0, got {alpha}")
