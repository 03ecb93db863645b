"""The protection tables: secure aggregation, homomorphic encryption, statistics, and DP."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ._common import _require

if TYPE_CHECKING:
    from he import StatsSpec


ADVERSARIES = ("semi_honest", "semi_malicious", "malicious")
"""``secagg.adversary``: what the coordinator is assumed to do (``mpc.Adversary``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggSection:
    """``[secagg]``: secure aggregation (SecAgg+; the complete graph is SecAgg).

    Attributes:
        dropout_rate: the fraction of the cohort that may drop out (delta).
        corrupt_rate: the assumed fraction of clients colluding with the coordinator (gamma).
        adversary: ``"semi_honest"``, ``"semi_malicious"`` or ``"malicious"`` coordinator (the
            last two choose the same, stricter thresholds; the consistency check runs for all).
            Unset, it is ``"malicious"`` for a deployment with a roster (see
            :func:`with_deployment_defaults`) and ``"semi_honest"`` otherwise.
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
            self.adversary in ADVERSARIES,
            "secagg.adversary",
            "'semi_honest', 'semi_malicious' or 'malicious'",
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
HE_REALS = ("bfv", "ckks")
NO_MODEL = "none"
"""``model.name`` of a statistics job, which trains no model."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HESection:
    """``[he]``: homomorphic encryption, for ``job.kind = "stats"`` and ``aggregation.kind = "he"``.

    Attributes:
        min_contributors: k, the fewest distinct owners whose aggregate the key holder decrypts
            (an owner whose policy demands more refuses the job; the key holder may raise it).
        reals: how real values (moments, training updates) are encrypted: ``"bfv"`` (default:
            exact fixed point in BFV's plaintext ring, nothing to flood) or ``"ckks"`` (CKKS,
            flooded so that the job's total statistical distance is at most 2^-64, which at
            these parameters leaves little precision; see he/README.md).
        ckks: the CKKS parameter preset (real values when ``reals = "ckks"``).
        bfv: the BFV parameter preset (exact counts and histograms; and the reals when
            ``reals = "bfv"``, for which its plain modulus must leave enough fraction bits).
        masking: owners add pairwise zero-sum masks (``he/masking.py``) to their plaintexts so
            that even the key holder, with the coordinator, learns only the cohort's sum; an
            extra stage ``he.keys`` advertises the owners' masking keys. Applies with
            ``reals = "bfv"`` (BFV's exact ring); a CKKS job is never masked.
        flood_bits: the least s of the key holder's flooding of CKKS releases; it floods with
            at least what the job needs for a total distance of 2^-64.
        max_decryptions: the key holder's decryption budget for the job (0: one per round).
        clip: training: every update coordinate is clipped to [-clip, clip] before encryption.
        max_weight: training: examples are capped at this when weighting updates.
        max_owners: training: the most owners one encrypted sum may hold (0: data.num_clients).
        keyholder_key: hex Ed25519 public key of the key holder whose public context owners
            accept ("": the owners' policies say whom they trust).
    """

    min_contributors: int = 3
    reals: str = "bfv"
    masking: bool = True
    ckks: str = "ckks_8192"
    bfv: str = "bfv_8192"
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
        _require(self.reals in HE_REALS, "he.reals", f"one of {list(HE_REALS)}", self.reals)
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
        accountant: ``pld`` (the default, the tight one) or ``rdp``: which accountant certifies
            that the calibrated Gaussian noise meets ``epsilon``.
        clipping: DP-SGD clipping: ``flat``, ``per_layer``, ``ghost``, ``bookkeeping`` or ``auto``.
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
    accountant: str = "pld"
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
            self.accountant in ("rdp", "pld"), "dp.accountant", "'rdp' or 'pld'", self.accountant
        )
        _require(
            self.clipping in ("flat", "per_layer", "ghost", "bookkeeping", "auto"),
            "dp.clipping",
            "flat, per_layer, ghost, bookkeeping or auto",
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
