"""Job configuration: frozen, validated dataclasses and the one TOML loader.

A job file (TOML) has one table per section below. Every field has a default except where noted;
an unknown table or field, a wrong type, or a value out of range raises
:class:`~fl_core.errors.ConfigError` naming ``section.field`` and what is allowed. The coordinator
and every data owner load the same file; its SHA-256 is what an owner agrees to when it joins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from he import StatsSpec

DEFAULT_ROUNDS = 3
DEFAULT_STAGE_TIMEOUT_S = 120.0
DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_MAX_PAYLOAD_BYTES = 2 << 30
DEFAULT_MAX_HEADER_BYTES = 8 << 20

JOB_KINDS = ("train", "stats")
STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad")
AGGREGATIONS = ("mean", "secagg", "he")
PARTITIONS = ("iid", "dirichlet", "quantity_skew")
OPTIMIZERS = ("sgd", "adam")


def _require(ok: bool, where: str, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{where} = {value!r} is not allowed; expected {allowed}")


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
class SecAggSection:
    """``[secagg]``: secure aggregation (SecAgg+; the complete graph is SecAgg).

    Attributes:
        dropout_rate: the fraction of the cohort that may drop out (delta).
        corrupt_rate: the assumed fraction of clients colluding with the coordinator (gamma).
        adversary: ``"semi_honest"`` or ``"semi_malicious"`` coordinator.
        full_graph: use SecAgg's complete graph instead of the finder's sparse one.
        degree: an explicit neighbourhood size k (0: chosen by the parameter finder).
        threshold: an explicit threshold t (0: chosen by the parameter finder).
        ring_bits: 32 or 64.
        quantization_bits: bits per quantized value (0: the most the cohort allows, up to 24).
        clip: updates are clipped elementwise to [-clip, clip] before quantization.
        max_weight: examples are capped at this when weighting updates.
    """

    dropout_rate: float = 0.1
    corrupt_rate: float = 0.05
    adversary: str = "semi_honest"
    full_graph: bool = False
    degree: int = 0
    threshold: int = 0
    ring_bits: int = 32
    quantization_bits: int = 0
    clip: float = 1.0
    max_weight: int = 100_000

    def __post_init__(self) -> None:
        _require(
            0 <= self.dropout_rate < 1,
            "secagg.dropout_rate",
            "a number in [0, 1)",
            self.dropout_rate,
        )
        _require(
            0 <= self.corrupt_rate < 1,
            "secagg.corrupt_rate",
            "a number in [0, 1)",
            self.corrupt_rate,
        )
        _require(
            self.adversary in ("semi_honest", "semi_malicious"),
            "secagg.adversary",
            "'semi_honest' or 'semi_malicious'",
            self.adversary,
        )
        _require(self.degree >= 0, "secagg.degree", "an integer >= 0 (0: finder)", self.degree)
        _require(
            self.threshold >= 0, "secagg.threshold", "an integer >= 0 (0: finder)", self.threshold
        )
        _require(
            (self.degree == 0) == (self.threshold == 0),
            "secagg.threshold",
            "set together with secagg.degree (or both 0)",
            self.threshold,
        )
        _require(self.ring_bits in (32, 64), "secagg.ring_bits", "32 or 64", self.ring_bits)
        _require(
            0 <= self.quantization_bits <= 40,
            "secagg.quantization_bits",
            "an integer in [0, 40] (0: automatic)",
            self.quantization_bits,
        )
        _require(
            self.clip > 0 and math.isfinite(self.clip), "secagg.clip", "a number > 0", self.clip
        )
        _require(
            1 <= self.max_weight <= 10**9,
            "secagg.max_weight",
            "an integer in [1, 10^9]",
            self.max_weight,
        )


HE_CKKS_PRESETS = ("ckks_8192",)
HE_BFV_PRESETS = ("bfv_4096", "bfv_8192")
NO_MODEL = "none"
"""``model.name`` of a statistics job, which trains no model."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HESection:
    """``[he]``: homomorphic encryption, for ``job.kind = "stats"`` and ``aggregation.kind = "he"``.

    Attributes:
        min_contributors: k, the fewest distinct owners whose aggregate the key holder decrypts
            (an owner whose policy demands more refuses the job; the key holder may raise it).
        ckks: the CKKS parameter preset (real values).
        bfv: the BFV parameter preset (exact counts and histograms).
        flood_bits: statistical security s of the key holder's flooding of CKKS releases.
        max_decryptions: the key holder's decryption budget for the job (0: one per round).
        clip: training: every update coordinate is clipped to [-clip, clip] before encryption.
        max_weight: training: examples are capped at this when weighting updates.
        max_owners: training: the most owners one encrypted sum may hold (0: data.num_clients).
        keyholder_key: hex Ed25519 public key of the key holder whose public context owners
            accept ("": the owners' policies say whom they trust).
    """

    min_contributors: int = 3
    ckks: str = "ckks_8192"
    bfv: str = "bfv_4096"
    flood_bits: int = 40
    max_decryptions: int = 0
    clip: float = 1.0
    max_weight: int = 100_000
    max_owners: int = 0
    keyholder_key: str = ""

    def __post_init__(self) -> None:
        _require(
            2 <= self.min_contributors <= 1 << 20,
            "he.min_contributors",
            "an integer in [2, 2^20]",
            self.min_contributors,
        )
        _require(
            self.ckks in HE_CKKS_PRESETS, "he.ckks", f"one of {list(HE_CKKS_PRESETS)}", self.ckks
        )
        _require(self.bfv in HE_BFV_PRESETS, "he.bfv", f"one of {list(HE_BFV_PRESETS)}", self.bfv)
        _require(
            20 <= self.flood_bits <= 60, "he.flood_bits", "an integer in [20, 60]", self.flood_bits
        )
        _require(
            self.max_decryptions >= 0,
            "he.max_decryptions",
            "an integer >= 0 (0: one per round)",
            self.max_decryptions,
        )
        _require(
            0 < self.clip <= 1e12 and math.isfinite(self.clip),
            "he.clip",
            "a number in (0, 1e12]",
            self.clip,
        )
        _require(
            1 <= self.max_weight <= 10**9,
            "he.max_weight",
            "an integer in [1, 10^9]",
            self.max_weight,
        )
        _require(
            self.max_owners == 0 or 2 <= self.max_owners <= 1 << 20,
            "he.max_owners",
            "0 (data.num_clients) or an integer in [2, 2^20]",
            self.max_owners,
        )
        key = self.keyholder_key
        _require(
            key == "" or (len(key) == 64 and all(ch in "0123456789abcdef" for ch in key)),
            "he.keyholder_key",
            "64 lower-case hex digits (a raw Ed25519 public key) or empty",
            key,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsSection:
    """``[stats]``: what a statistics job computes, as :func:`he.spec_from_dict` reads it.

    Keys: ``columns``, ``statistics``, ``max_rows_per_owner``, ``max_owners``,
    ``moment_columns``, ``clip``, ``histograms``, ``quantiles``, ``ols``, ``ddof``,
    ``out_of_range`` and ``dp`` (see ``he/README.md``). The table is kept as canonical JSON and
    checked when the job is loaded; errors name ``stats.<field>``.
    """

    table_json: str

    def __post_init__(self) -> None:
        self.spec()

    def spec(self) -> StatsSpec:
        """The statistics spec (imports ``he``, and with it TenSEAL, on first use).

        Raises:
            ConfigError: the table is not a valid statistics spec (the field is named).
        """
        from he import HeError, StatsSpec, spec_from_dict

        try:
            spec = spec_from_dict(json.loads(self.table_json))
        except (HeError, ValueError) as exc:
            raise ConfigError(f"stats: {exc}") from exc
        if not isinstance(spec, StatsSpec):
            raise ConfigError("stats.type = 'vector' is not allowed; expected 'statistics'")
        return spec

    @classmethod
    def from_table(cls, table: object) -> StatsSection:
        """Build the section from the ``[stats]`` TOML table.

        Raises:
            ConfigError: not a table, values TOML has but JSON has not (dates), or a bad spec.
        """
        if not isinstance(table, dict):
            raise ConfigError("[stats] must be a table")
        try:
            text = json.dumps(table, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"[stats] holds a value that is not a number, string or table: {exc}"
            ) from exc
        return cls(table_json=text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """``[limits]``: what is accepted from the network, checked before anything is allocated."""

    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_fields: int = 4096

    def __post_init__(self) -> None:
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


DP_MODES = ("none", "dpsgd", "central", "distributed", "fedsgd")


@dataclass(frozen=True, slots=True, kw_only=True)
class DPSection:
    """``[dp]``: differential privacy, and whose noise protects what.

    Modes:
        ``dpsgd``: example-level DP-SGD (Opacus) at each data owner; ``clip`` bounds each
            example's gradient.
        ``central``: client-level DP-FedAvg; owners clip their update to ``clip``, the coordinator
            adds Gaussian noise to the sum (it is trusted to).
        ``distributed``: client-level DP-FedAvg under secure aggregation; each owner adds its
            share of integer Skellam noise, the coordinator sees only the noised sum.
        ``fedsgd``: example-level DP-FedSGD; every round is one DP-SGD step on the union of the
            institutions' Poisson samples (rate ``sample_rate``), with the noise added inside
            secure aggregation.

    Attributes:
        mode: one of the modes above (``none``: no DP).
        epsilon: the target epsilon over the whole job (the noise is calibrated to it), or 0.
        noise_multiplier: an explicit noise multiplier instead of ``epsilon`` (0: calibrate).
        delta: the delta of every stated guarantee.
        clip: L2 bound (per example for dpsgd/fedsgd, per update for central/distributed).
        accountant: ``rdp`` or ``prv`` (for calibrating Gaussian noise).
        clipping: DP-SGD clipping: ``flat``, ``per_layer``, ``ghost`` or ``auto``.
        secure_mode: DP-SGD: Opacus's secure noise construction.
        bits: Skellam modular-clipping width (distributed/fedsgd), at most 32.
        colluders: clients assumed to collude with the coordinator (their noise is not counted).
        beta: Skellam conditional rounding (distributed only; 0 disables).
        min_clients: the fewest survivors a round accepts, which the noise is calibrated for
            (0: ``sampling.min_clients``).
        sample_rate: fedsgd: Poisson sampling rate of examples at every institution.
        expected_batch: fedsgd: expected examples per step over all institutions.
    """

    mode: str = "none"
    epsilon: float = 0.0
    noise_multiplier: float = 0.0
    delta: float = 1e-5
    clip: float = 1.0
    accountant: str = "rdp"
    clipping: str = "auto"
    secure_mode: bool = True
    bits: int = 20
    colluders: int = 0
    beta: float = 0.0
    min_clients: int = 0
    sample_rate: float = 0.0
    expected_batch: float = 0.0

    def __post_init__(self) -> None:
        _require(self.mode in DP_MODES, "dp.mode", f"one of {list(DP_MODES)}", self.mode)
        _require(
            self.epsilon >= 0 and math.isfinite(self.epsilon),
            "dp.epsilon",
            "a number >= 0",
            self.epsilon,
        )
        _require(
            self.noise_multiplier >= 0,
            "dp.noise_multiplier",
            "a number >= 0",
            self.noise_multiplier,
        )
        if self.mode != "none":
            _require(
                (self.epsilon > 0) != (self.noise_multiplier > 0),
                "dp.epsilon",
                "set exactly one of dp.epsilon and dp.noise_multiplier",
                self.epsilon,
            )
        _require(0 < self.delta < 1, "dp.delta", "a number in (0, 1)", self.delta)
        _require(self.clip > 0 and math.isfinite(self.clip), "dp.clip", "a number > 0", self.clip)
        _require(
            self.accountant in ("rdp", "prv"), "dp.accountant", "'rdp' or 'prv'", self.accountant
        )
        _require(
            self.clipping in ("flat", "per_layer", "ghost", "auto"),
            "dp.clipping",
            "flat, per_layer, ghost or auto",
            self.clipping,
        )
        _require(8 <= self.bits <= 32, "dp.bits", "an integer in [8, 32]", self.bits)
        _require(self.colluders >= 0, "dp.colluders", "an integer >= 0", self.colluders)
        _require(0 <= self.beta < 1, "dp.beta", "a number in [0, 1)", self.beta)
        _require(self.min_clients >= 0, "dp.min_clients", "an integer >= 0", self.min_clients)
        _require(
            0 <= self.sample_rate <= 1, "dp.sample_rate", "a number in [0, 1]", self.sample_rate
        )
        _require(
            self.expected_batch >= 0, "dp.expected_batch", "a number >= 0", self.expected_batch
        )
        if self.mode in ("distributed", "fedsgd"):
            _require(
                self.noise_multiplier == 0,
                "dp.noise_multiplier",
                "0 for Skellam modes (set dp.epsilon)",
                self.noise_multiplier,
            )
        if self.mode == "fedsgd":
            _require(
                0 < self.sample_rate < 1,
                "dp.sample_rate",
                "a number in (0, 1) for dp.mode = 'fedsgd'",
                self.sample_rate,
            )
            _require(
                self.expected_batch > 0,
                "dp.expected_batch",
                "a number > 0 for dp.mode = 'fedsgd'",
                self.expected_batch,
            )
            _require(self.beta == 0, "dp.beta", "0 for dp.mode = 'fedsgd'", self.beta)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobConfig:
    """A whole job, as read from its TOML file."""

    job: JobSection
    data: DataSection
    model: ModelSection
    train: TrainSection = field(default_factory=TrainSection)
    strategy: StrategySection = field(default_factory=StrategySection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    round: RoundSection = field(default_factory=RoundSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    aggregation: AggregationSection = field(default_factory=AggregationSection)
    secagg: SecAggSection = field(default_factory=SecAggSection)
    limits: Limits = field(default_factory=Limits)
    he: HESection = field(default_factory=HESection)
    dp: DPSection = field(default_factory=DPSection)
    stats: StatsSection | None = None
    source: str = field(default="", repr=False, compare=False)

    @property
    def sha256(self) -> str:
        """SHA-256 of the job file's text: what an owner agrees to."""
        return hashlib.sha256(self.source.encode()).hexdigest()


_SECTIONS: dict[str, type[Any]] = {
    "job": JobSection,
    "data": DataSection,
    "model": ModelSection,
    "train": TrainSection,
    "strategy": StrategySection,
    "sampling": SamplingSection,
    "round": RoundSection,
    "evaluation": EvaluationSection,
    "aggregation": AggregationSection,
    "secagg": SecAggSection,
    "limits": Limits,
    "he": HESection,
    "dp": DPSection,
}
_REQUIRED = ("job", "data", "model")


def _check_type(where: str, value: object, annotation: object) -> object:
    if typing.get_origin(annotation) is tuple:
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{where} = {value!r} must be a list of integers")
        return tuple(value)
    hints = (
        typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    )
    for hint in hints:
        if hint is type(None) and value is None:
            return value
        if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if hint is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if hint in (str, bool) and type(value) is hint:
            return value
    names = " or ".join(getattr(h, "__name__", str(h)) for h in hints)
    raise ConfigError(f"{where} = {value!r} has type {type(value).__name__}; expected {names}")


def _build(section: str, cls: type[Any], table: object) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, object] = {}
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{section}.{key} is not a known field; allowed fields: {allowed}")
        kwargs[key] = _check_type(f"{section}.{key}", value, hints[key])
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in kwargs
    ]
    if missing:
        raise ConfigError(f"{section}.{missing[0]} is required")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        raise ConfigError(f"[{section}]: {exc}") from exc


def parse_job(text: str) -> JobConfig:
    """Parse a job file's text into a :class:`JobConfig`.

    Raises:
        ConfigError: naming the table or field that is wrong and what is allowed.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"job file is not valid TOML: {exc}") from exc
    sections = dict(_SECTIONS)
    for name in raw:
        if name not in sections and name != "stats":
            allowed = [*sections, "stats"]
            raise ConfigError(f"[{name}] is not a known table; allowed tables: {allowed}")
    stats_job = isinstance(raw.get("job"), dict) and raw["job"].get("kind") == "stats"
    for name in ("job", "data", "stats") if stats_job else _REQUIRED:
        if name not in raw:
            raise ConfigError(f"[{name}] is required" + (" for job.kind = 'stats'" * stats_job))
    built = {name: _build(name, sections[name], raw[name]) for name in raw if name != "stats"}
    if "stats" in raw:
        if not stats_job:
            raise ConfigError("[stats] is only allowed with job.kind = 'stats'")
        built["stats"] = StatsSection.from_table(raw["stats"])
    if stats_job:
        _require(
            built["job"].rounds == 1 or "rounds" not in raw["job"],
            "job.rounds",
            "1 for a statistics job (it computes its result once)",
            built["job"].rounds,
        )
        built["job"] = dataclasses.replace(built["job"], rounds=1)
        built.setdefault("model", ModelSection(name=NO_MODEL))
    job = JobConfig(**built, source=text)
    _check_dp(job)
    return job


def _check_dp(job: JobConfig) -> None:
    """Rules that span tables: what each DP mode needs from the rest of the job."""
    mode = job.dp.mode
    if mode == "none":
        return
    kind = job.aggregation.kind
    if mode in ("distributed", "fedsgd"):
        _require(kind == "secagg", "aggregation.kind", f"'secagg' for dp.mode = {mode!r}", kind)
    if mode == "central":
        _require(
            kind in ("mean", "secagg"),
            "aggregation.kind",
            "'mean' or 'secagg' for dp.mode = 'central'",
            kind,
        )
    floor = job.dp.min_clients or job.sampling.min_clients
    _require(
        job.dp.colluders < floor,
        "dp.colluders",
        f"fewer than the {floor} clients the noise is calibrated for",
        job.dp.colluders,
    )
    if mode == "fedsgd":
        _require(
            job.train.epochs == 1,
            "train.epochs",
            "1 for dp.mode = 'fedsgd' (a round is one step)",
            job.train.epochs,
        )


def load_job(path: str | Path) -> JobConfig:
    """Read and parse a job file.

    Raises:
        ConfigError: when the file cannot be read or is not a valid job.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read job file {path}: {exc.strerror}") from exc
    return parse_job(text)
