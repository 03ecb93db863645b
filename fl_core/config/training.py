"""The training tables.

Job, data, model, local training, strategy, sampling, rounds, evaluation, aggregation kind, and
the transport's limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._common import (
    AGGREGATIONS,
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_ROUNDS,
    DEFAULT_STAGE_TIMEOUT_S,
    JOB_KINDS,
    OPTIMIZERS,
    PARTITIONS,
    STRATEGIES,
    _require,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSection:
    """``[job]``: identity, kind (``train`` a model or compute ``stats``) and length of the job."""

    name: str
    kind: str = "train"
    rounds: int = DEFAULT_ROUNDS
    seed: int | None = None
    purpose: str = ""

    def __post_init__(self) -> None:
        _require(
            bool(self.name)
            and len(self.name) <= 128
            and self.name.replace("-", "").replace("_", "").isalnum(),
            "job.name",
            "1-128 letters, digits, '-' or '_'",
            self.name,
        )
        _require(self.kind in JOB_KINDS, "job.kind", f"one of {list(JOB_KINDS)}", self.kind)
        _require(
            1 <= self.rounds <= 1_000_000, "job.rounds", "an integer in [1, 1000000]", self.rounds
        )
        _require(
            self.seed is None or 0 <= self.seed < 2**63,
            "job.seed",
            "an integer in [0, 2^63)",
            self.seed,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSection:
    """``[data]``: which data set, and how a simulation splits it among the data owners."""

    dataset: str
    path: str = ""
    num_clients: int = 10
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    min_examples: int = 10

    def __post_init__(self) -> None:
        _require(bool(self.dataset), "data.dataset", "a data set name", self.dataset)
        _require(
            1 <= self.num_clients <= 100_000,
            "data.num_clients",
            "an integer in [1, 100000]",
            self.num_clients,
        )
        _require(
            self.partition in PARTITIONS,
            "data.partition",
            f"one of {list(PARTITIONS)}",
            self.partition,
        )
        _require(
            self.alpha > 0 and math.isfinite(self.alpha), "data.alpha", "a number > 0", self.alpha
        )
        _require(self.min_examples >= 1, "data.min_examples", "an integer >= 1", self.min_examples)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSection:
    """``[model]``: the architecture, by registry name.

    ``input_shape`` and ``num_classes`` let a coordinator build the initial model without any
    data; when omitted they are read from the data set's description.
    """

    name: str
    init_seed: int = 0
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0

    def __post_init__(self) -> None:
        _require(bool(self.name), "model.name", "a model name", self.name)
        _require(
            all(1 <= d <= 1 << 20 for d in self.input_shape) and len(self.input_shape) <= 4,
            "model.input_shape",
            "up to 4 positive integers",
            list(self.input_shape),
        )
        _require(
            0 <= self.num_classes <= 1 << 20,
            "model.num_classes",
            "an integer >= 1",
            self.num_classes,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainSection:
    """``[train]``: local training at each data owner (becomes a FitConfig each round)."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    max_steps: int = 0

    def __post_init__(self) -> None:
        _require(
            1 <= self.epochs <= 10_000, "train.epochs", "an integer in [1, 10000]", self.epochs
        )
        _require(
            1 <= self.batch_size <= 1 << 20,
            "train.batch_size",
            "an integer in [1, 2^20]",
            self.batch_size,
        )
        _require(
            self.learning_rate > 0 and math.isfinite(self.learning_rate),
            "train.learning_rate",
            "a number > 0",
            self.learning_rate,
        )
        _require(0 <= self.momentum < 1, "train.momentum", "a number in [0, 1)", self.momentum)
        _require(self.weight_decay >= 0, "train.weight_decay", "a number >= 0", self.weight_decay)
        _require(
            self.optimizer in OPTIMIZERS,
            "train.optimizer",
            f"one of {list(OPTIMIZERS)}",
            self.optimizer,
        )
        _require(
            self.max_steps >= 0, "train.max_steps", "an integer >= 0 (0: no limit)", self.max_steps
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategySection:
    """``[strategy]``: how the coordinator turns the aggregate update into the next global model.

    FedOpt defaults follow Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (Section 3 and
    Appendix D): beta1 0.9, beta2 0.99, tau 1e-3.
    """

    name: str = "fedavg"
    server_learning_rate: float = 1.0
    server_momentum: float = 0.0
    proximal_mu: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        _require(self.name in STRATEGIES, "strategy.name", f"one of {list(STRATEGIES)}", self.name)
        _require(
            self.server_learning_rate > 0,
            "strategy.server_learning_rate",
            "a number > 0",
            self.server_learning_rate,
        )
        _require(
            0 <= self.server_momentum < 1,
            "strategy.server_momentum",
            "a number in [0, 1)",
            self.server_momentum,
        )
        _require(self.proximal_mu >= 0, "strategy.proximal_mu", "a number >= 0", self.proximal_mu)
        _require(
            self.name != "fedprox" or self.proximal_mu > 0,
            "strategy.proximal_mu",
            "a number > 0 for fedprox",
            self.proximal_mu,
        )
        _require(0 <= self.beta1 < 1, "strategy.beta1", "a number in [0, 1)", self.beta1)
        _require(0 <= self.beta2 < 1, "strategy.beta2", "a number in [0, 1)", self.beta2)
        _require(self.tau > 0, "strategy.tau", "a number > 0", self.tau)


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingSection:
    """``[sampling]``: which connected clients take part in a round.

    ``fraction`` of the connected clients, at least ``min_clients``. With ``poisson`` each client
    is included independently with probability ``fraction`` (what DP amplification by sampling
    assumes); otherwise a uniformly random subset of fixed size is drawn and no amplification is
    claimed.
    """

    fraction: float = 1.0
    min_clients: int = 2
    poisson: bool = False
    wait_for_clients_s: float = 300.0

    def __post_init__(self) -> None:
        _require(0 < self.fraction <= 1, "sampling.fraction", "a number in (0, 1]", self.fraction)
        _require(self.min_clients >= 1, "sampling.min_clients", "an integer >= 1", self.min_clients)
        _require(
            self.wait_for_clients_s > 0,
            "sampling.wait_for_clients_s",
            "a number > 0",
            self.wait_for_clients_s,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundSection:
    """``[round]``: deadlines and quorum of each stage, and retries of an aborted round."""

    stage_timeout_s: float = DEFAULT_STAGE_TIMEOUT_S
    quorum_fraction: float = 0.5
    max_attempts: int = 3

    def __post_init__(self) -> None:
        _require(
            0 < self.stage_timeout_s <= 86_400,
            "round.stage_timeout_s",
            "a number in (0, 86400]",
            self.stage_timeout_s,
        )
        _require(
            0 < self.quorum_fraction <= 1,
            "round.quorum_fraction",
            "a number in (0, 1]",
            self.quorum_fraction,
        )
        _require(
            1 <= self.max_attempts <= 100,
            "round.max_attempts",
            "an integer in [1, 100]",
            self.max_attempts,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationSection:
    """``[evaluation]``: federated evaluation of the new global model after a round."""

    every: int = 1
    fraction: float = 1.0

    def __post_init__(self) -> None:
        _require(self.every >= 0, "evaluation.every", "an integer >= 0 (0: never)", self.every)
        _require(0 < self.fraction <= 1, "evaluation.fraction", "a number in (0, 1]", self.fraction)


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregationSection:
    """``[aggregation]``: how updates are summed (``mean`` in the clear, ``secagg``, ``he``)."""

    kind: str = "mean"

    def __post_init__(self) -> None:
        _require(
            self.kind in AGGREGATIONS, "aggregation.kind", f"one of {list(AGGREGATIONS)}", self.kind
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """``[limits]``: what is accepted from the network, checked before anything is allocated."""

    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_fields: int = 4096
    max_update_norm: float = 0.0
    """Plain mean: the largest L2 norm of an update the coordinator accepts (0: no bound)."""
    max_clients: int = 100_000
    """How many distinct participants may join (and how many join challenges may be open)."""

    def __post_init__(self) -> None:
        _require(
            isinstance(self.max_clients, int) and 1 <= self.max_clients <= 10_000_000,
            "limits.max_clients",
            "an integer in [1, 10^7]",
            self.max_clients,
        )
        _require(
            isinstance(self.max_update_norm, int | float)
            and math.isfinite(self.max_update_norm)
            and self.max_update_norm >= 0,
            "limits.max_update_norm",
            "a finite number >= 0 (0: no bound)",
            self.max_update_norm,
        )
        _require(
            4096 <= self.chunk_bytes <= 16 << 20,
            "limits.chunk_bytes",
            "an integer in [4096, 16 MiB]",
            self.chunk_bytes,
        )
        _require(
            self.max_payload_bytes >= self.chunk_bytes,
            "limits.max_payload_bytes",
            "an integer >= limits.chunk_bytes",
            self.max_payload_bytes,
        )
        _require(
            1024 <= self.max_header_bytes <= 256 << 20,
            "limits.max_header_bytes",
            "an integer in [1 KiB, 256 MiB]",
            self.max_header_bytes,
        )
        _require(
            1 <= self.max_fields <= 1 << 20,
            "limits.max_fields",
            "an integer in [1, 2^20]",
            self.max_fields,
        )

    @property
    def max_chunks(self) -> int:
        """The most data chunks one message may have."""
        return -(-self.max_payload_bytes // self.chunk_bytes) + 1
