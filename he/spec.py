"""What a job computes: the statistics spec and the vector spec, and the layout both sides share.

A spec is a frozen dataclass built from a plain dict (a TOML table of the job file) with
`spec_from_dict`. Owners sign its digest into every contribution, so the coordinator cannot change
it on the way to the key holder. `StatsSpec.layout` is the single place where the order of the
sufficient statistics inside the BFV and CKKS vectors is decided.

The no-wrap rule (checked by `check_params` when a spec meets a public context): every slot's
largest possible sum, over ``max_owners`` owners of ``max_rows_per_owner`` rows clipped to the
configured ranges, must fit in the scheme: ``(t - 1) // 2`` for BFV, `HEParams.max_abs_value`
for CKKS (where each sum is first divided by its per-row bound, see `real_scales`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from he import _wire
from he.errors import SpecError
from he.fixed import fraction_bits, real_params
from he.params import HEParams, Scheme

DEFAULT_DDOF = 1
MAX_COLUMNS = 256
MAX_BINS = 4096
MAX_NAME_LEN = 64
MAX_VECTOR_LENGTH = 2**31 - 1
MAX_OWNERS = 2**20


class Statistic(StrEnum):
    """Statistics a job can ask for."""

    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    VARIANCE = "variance"
    STD = "std"
    HISTOGRAM = "histogram"
    QUANTILES = "quantiles"
    COVARIANCE = "covariance"
    CORRELATION = "correlation"
    OLS = "ols"


class OutOfRange(StrEnum):
    """What an owner does with a value outside its column's range."""

    CLIP = "clip"
    REFUSE = "refuse"


_MOMENTS = {Statistic.SUM, Statistic.MEAN, Statistic.VARIANCE, Statistic.STD}
_SQUARES = {Statistic.VARIANCE, Statistic.STD}
_CROSS = {Statistic.COVARIANCE, Statistic.CORRELATION, Statistic.OLS}


@dataclass(frozen=True, slots=True, kw_only=True)
class ColumnRange:
    """The closed range [low, high] a column's values are clipped (or refused) to."""

    column: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise SpecError(
                f"clip.{self.column} must be finite numbers [low, high] with low < high, "
                f"got [{self.low}, {self.high}]"
            )

    @property
    def bound(self) -> float:
        """The largest magnitude a clipped value can have."""
        return max(abs(self.low), abs(self.high))


@dataclass(frozen=True, slots=True, kw_only=True)
class HistogramSpec:
    """Fixed equal-width bins over [low, high]; values outside go to the edge bins (clipped)."""

    column: str
    bins: int
    low: float
    high: float

    def __post_init__(self) -> None:
        if not _is_int(self.bins) or not 1 <= self.bins <= MAX_BINS:
            raise SpecError(f"histograms.{self.column}.bins must be in [1, {MAX_BINS}]")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise SpecError(
                f"histograms.{self.column}.range must be finite [low, high] with low < high"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class OLSSpec:
    """Ordinary least squares of ``target`` on ``features`` (plus an intercept if asked)."""

    target: str
    features: tuple[str, ...]
    intercept: bool = True

    def __post_init__(self) -> None:
        if not self.features or len(set(self.features)) != len(self.features):
            raise SpecError("ols.features must be a non-empty list of distinct column names")
        if self.target in self.features:
            raise SpecError(f"ols.target {self.target!r} must not be one of ols.features")


@dataclass(frozen=True, slots=True, kw_only=True)
class DPSpec:
    """(epsilon, delta) for the whole release, record-level, add/remove-one neighbours."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and 0 < self.epsilon <= 100):
            raise SpecError(f"dp.epsilon must lie in (0, 100], got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise SpecError(f"dp.delta must lie in (0, 1), got {self.delta}")

    @property
    def rho(self) -> float:
        """The zCDP rho whose conversion gives exactly (epsilon, delta).

        Notes:
            rho-zCDP implies (rho + 2 sqrt(rho log(1/delta)), delta)-DP (Bun and Steinke, TCC
            2016, Proposition 1.3); this solves that for rho.
        """
        log_term = math.log(1 / self.delta)
        root = math.sqrt(log_term + self.epsilon) - math.sqrt(log_term)
        return root * root


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each sufficient statistic sits in the BFV (integer) and CKKS (real) vectors."""

    n_integers: int
    n_reals: int
    histogram_offsets: tuple[int, ...]
    real_columns: tuple[str, ...]
    products: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsSpec:
    """A statistics job: which columns, which statistics, ranges, bins and limits."""

    columns: tuple[str, ...]
    statistics: frozenset[Statistic]
    max_rows_per_owner: int
    max_owners: int
    moment_columns: tuple[str, ...] = ()
    clip: tuple[ColumnRange, ...] = ()
    histograms: tuple[HistogramSpec, ...] = ()
    quantiles: tuple[float, ...] = ()
    ols: OLSSpec | None = None
    ddof: int = DEFAULT_DDOF
    out_of_range: OutOfRange = OutOfRange.CLIP
    dp: DPSpec | None = None
    layout: Layout = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cols = self.columns
        if not cols or len(cols) > MAX_COLUMNS or len(set(cols)) != len(cols):
            raise SpecError(f"columns must be 1..{MAX_COLUMNS} distinct names")
        for name in cols:
            if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LEN:
                raise SpecError(f"column names must be strings of 1..{MAX_NAME_LEN} characters")
        if not all(isinstance(s, Statistic) for s in self.statistics) or not self.statistics:
            raise SpecError(
                f"statistics must be a non-empty subset of {[s.value for s in Statistic]}"
            )
        if not _is_int(self.max_rows_per_owner) or not 1 <= self.max_rows_per_owner <= 2**40:
            raise SpecError("max_rows_per_owner must be an integer in [1, 2^40]")
        if not _is_int(self.max_owners) or not 2 <= self.max_owners <= MAX_OWNERS:
            raise SpecError(f"max_owners must be an integer in [2, {MAX_OWNERS}]")
        if not _is_int(self.ddof) or self.ddof not in (0, 1):
            raise SpecError(f"ddof must be 0 or 1, got {self.ddof!r}")
        if not isinstance(self.out_of_range, OutOfRange):
            raise SpecError(f"out_of_range must be one of {[o.value for o in OutOfRange]}")
        self._check_references()
        # Canonical order (by position in columns), so the layout survives canonical JSON,
        # which sorts keys: every side must derive the same layout from the same digest.
        order = {name: i for i, name in enumerate(cols)}
        object.__setattr__(
            self, "histograms", tuple(sorted(self.histograms, key=lambda h: order[h.column]))
        )
        object.__setattr__(self, "clip", tuple(sorted(self.clip, key=lambda c: order[c.column])))
        object.__setattr__(self, "layout", self._build_layout())

    def _check_references(self) -> None:
        known = set(self.columns)
        for name in self.moment_columns:
            if name not in known:
                raise SpecError(f"moment_columns names unknown column {name!r}")
        clip_names = [c.column for c in self.clip]
        if len(set(clip_names)) != len(clip_names) or not set(clip_names) <= known:
            raise SpecError("clip must name each known column at most once")
        hist_names = [h.column for h in self.histograms]
        if len(set(hist_names)) != len(hist_names) or not set(hist_names) <= known:
            raise SpecError("histograms must name each known column at most once")
        wants = self.statistics
        if wants & {Statistic.HISTOGRAM, Statistic.QUANTILES} and not self.histograms:
            raise SpecError("histogram and quantiles need at least one entry in histograms")
        if Statistic.QUANTILES in wants:
            if not self.quantiles or not all(0 < q < 1 for q in self.quantiles):
                raise SpecError("quantiles must be a non-empty list of numbers in (0, 1)")
        if (Statistic.OLS in wants) != (self.ols is not None):
            raise SpecError("statistic 'ols' and the ols table must be given together")
        if self.ols is not None:
            for name in (*self.ols.features, self.ols.target):
                if name not in known:
                    raise SpecError(f"ols names unknown column {name!r}")
        if wants & (_MOMENTS | _CROSS - {Statistic.OLS}) and not self.moment_columns:
            raise SpecError("moment statistics need moment_columns (columns to compute them on)")
        ranges = {c.column for c in self.clip}
        for name in self._real_columns():
            if name not in ranges:
                raise SpecError(f"clip.{name} is required: real-valued statistics use {name!r}")

    def _real_columns(self) -> tuple[str, ...]:
        names: list[str] = []
        if self.statistics & (_MOMENTS | _CROSS - {Statistic.OLS}):
            names.extend(self.moment_columns)
        if self.ols is not None:
            names.extend(n for n in (*self.ols.features, self.ols.target) if n not in names)
        return tuple(names)

    def _build_layout(self) -> Layout:
        offsets, pos = [], 1
        for h in self.histograms:
            offsets.append(pos)
            pos += h.bins
        real = self._real_columns()
        index = range(len(real))
        if self.statistics & _CROSS:
            products = tuple((i, j) for i in index for j in index if i <= j)
        elif self.statistics & _SQUARES:
            products = tuple((i, i) for i in index)
        else:
            products = ()
        n_reals = len(real) + len(products) if real else 0
        return Layout(pos, n_reals, tuple(offsets), real, products)

    def range_of(self, column: str) -> ColumnRange:
        """The clipping range of a column."""
        for c in self.clip:
            if c.column == column:
                return c
        raise SpecError(f"clip.{column} is not configured")

    def real_bounds(self) -> list[float]:
        """Per CKKS slot, the largest magnitude one row contributes (for no-wrap and DP)."""
        bounds = [self.range_of(n).bound for n in self.layout.real_columns]
        return bounds + [bounds[i] * bounds[j] for i, j in self.layout.products]

    def check_params(self, params: tuple[HEParams, ...]) -> None:
        """Check that the largest possible sums fit the schemes without wrapping.

        Raises:
            SpecError: a scheme is missing or a sum could exceed its limit (named).
        """
        by_scheme = {p.scheme: p for p in params}
        total_rows = self.max_rows_per_owner * self.max_owners
        bfv = by_scheme.get(Scheme.BFV)
        if bfv is None:
            raise SpecError("counts and histograms need BFV parameters in the public context")
        if total_rows > bfv.max_abs_integer:
            raise SpecError(
                f"max_rows_per_owner * max_owners = {total_rows} exceeds the BFV limit "
                f"{bfv.max_abs_integer} = (plain_modulus - 1) // 2; counts would wrap"
            )
        if self.layout.n_reals:
            ckks = by_scheme.get(Scheme.CKKS)
            if ckks is None:  # exact BFV fixed point; raises if too few fraction bits fit
                real_encoding(self, params)
                return
            # each CKKS slot holds its sum divided by its per-row bound (see real_scales)
            if total_rows > ckks.max_abs_value:
                raise SpecError(
                    f"max_rows_per_owner * max_owners = {total_rows} exceeds the CKKS limit "
                    f"{ckks.max_abs_value:.3g} of scale 2^{ckks.scale_bits}"
                )

    def to_dict(self) -> dict[str, Any]:
        """The plain (TOML/JSON) form; `spec_from_dict` is its inverse."""
        out: dict[str, Any] = {
            "type": "statistics",
            "columns": list(self.columns),
            "statistics": sorted(s.value for s in self.statistics),
            "max_rows_per_owner": self.max_rows_per_owner,
            "max_owners": self.max_owners,
            "moment_columns": list(self.moment_columns),
            "clip": {c.column: [c.low, c.high] for c in self.clip},
            "histograms": {
                h.column: {"bins": h.bins, "range": [h.low, h.high]} for h in self.histograms
            },
            "quantiles": list(self.quantiles),
            "ddof": self.ddof,
            "out_of_range": self.out_of_range.value,
        }
        if self.ols is not None:
            out["ols"] = {
                "target": self.ols.target,
                "features": list(self.ols.features),
                "intercept": self.ols.intercept,
            }
        if self.dp is not None:
            out["dp"] = {"epsilon": self.dp.epsilon, "delta": self.dp.delta}
        return out

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of `to_dict`; owners sign it."""
        return hashlib.sha256(_wire.canonical_json(self.to_dict())).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class VectorSpec:
    """Encrypted model aggregation: a float vector of ``length`` values, each |v| <= max_abs."""

    length: int
    max_abs: float
    max_owners: int

    def __post_init__(self) -> None:
        if not _is_int(self.length) or not 1 <= self.length <= MAX_VECTOR_LENGTH:
            raise SpecError(f"length must be an integer in [1, {MAX_VECTOR_LENGTH}]")
        if not (math.isfinite(self.max_abs) and self.max_abs > 0):
            raise SpecError(f"max_abs must be a finite number > 0, got {self.max_abs}")
        if not _is_int(self.max_owners) or not 2 <= self.max_owners <= MAX_OWNERS:
            raise SpecError(f"max_owners must be an integer in [2, {MAX_OWNERS}]")

    def check_params(self, params: tuple[HEParams, ...]) -> None:
        """Check that max_owners * max_abs fits CKKS without wrapping.

        Without CKKS, BFV fixed point (`he.fixed`) must leave enough fraction bits.

        Raises:
            SpecError: neither scheme is there, or the sum could exceed its limit.
        """
        ckks = {p.scheme: p for p in params}.get(Scheme.CKKS)
        if ckks is None:  # exact BFV fixed point; raises if too few fraction bits fit
            real_encoding(self, params)
            return
        if self.max_abs * self.max_owners > ckks.max_abs_value:
            raise SpecError(
                f"max_abs * max_owners = {self.max_abs * self.max_owners:.3g} exceeds the CKKS "
                f"limit {ckks.max_abs_value:.3g}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The plain form; `spec_from_dict` is its inverse."""
        return {
            "type": "vector",
            "length": self.length,
            "max_abs": self.max_abs,
            "max_owners": self.max_owners,
        }

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of `to_dict`; owners sign it."""
        return hashlib.sha256(_wire.canonical_json(self.to_dict())).hexdigest()


Spec = StatsSpec | VectorSpec


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def real_scales(spec: Spec) -> npt.NDArray[np.float64]:
    """Per CKKS slot, the factor its sum is divided by before encryption.

    Statistics divide each sum by its per-row bound (`StatsSpec.real_bounds`), so every slot
    holds a value of magnitude at most the row count. CKKS decoding error is relative to the
    largest slot of a ciphertext, so this keeps small columns as precise as large ones.
    Vectors are not scaled.
    """
    if isinstance(spec, StatsSpec):
        return np.asarray(spec.real_bounds(), dtype=np.float64)
    return np.ones(spec.length, dtype=np.float64)


def vector_lengths(spec: Spec) -> tuple[int, int]:
    """(BFV values, CKKS values) one contribution of this spec holds."""
    if isinstance(spec, StatsSpec):
        return spec.layout.n_integers, spec.layout.n_reals
    return 0, spec.length


def real_limit(spec: Spec) -> float:
    """The largest magnitude the honest total of one real slot can reach (scaled slots)."""
    if isinstance(spec, StatsSpec):
        return float(spec.max_rows_per_owner * spec.max_owners)
    return float(spec.max_abs * spec.max_owners)


def real_encoding(spec: Spec, params: tuple[HEParams, ...]) -> tuple[HEParams, int | None]:
    """The parameters real values go under, and the fixed-point fraction bits (None: CKKS).

    Raises:
        SpecError: no scheme for reals, or too few fraction bits in BFV (`he.fixed`).
    """
    chosen = real_params(params)
    if chosen.scheme is Scheme.CKKS:
        return chosen, None
    return chosen, fraction_bits(chosen, limit=real_limit(spec), max_owners=spec.max_owners)
