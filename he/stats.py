"""Owner side of a statistics job, and the finalize step after the key holder's release.

Threat model: the owner computes its sufficient statistics in the clear on its own machine and
sends only their encryptions, signed and bound to (job id, round, context fingerprint, spec
digest, owner id). Raw rows never leave it. What the released *aggregate* statistics reveal about
individual rows is bounded only when the spec asks for DP noise (`DPSpec`).

Sufficient statistics (layout from `StatsSpec.layout`):
    BFV (exact integers): the row count, then each histogram's bin counts;
    CKKS (reals): the sum of each real column, then the sums of products (squares for variance,
    the upper triangle of X'X for covariance, correlation and OLS; X'y and y'y are in it).

`finalize_statistics` turns a `Release` into mean, variance, standard deviation, quantiles from
the histograms, covariance and correlation matrices and OLS coefficients. Its tolerances bound the
difference to the same statistics on the pooled plaintext data (DP noise excluded).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from he import _wire, encoding
from he._finalize import Histogram, OLSResult, finalize
from he.context import PublicContext
from he.envelope import (
    check_attempt,
    check_id,
    check_min_contributors,
    check_round,
    encode_contribution,
    sign_receipt,
)
from he.errors import DataError, SpecError
from he.masking import Masking
from he.params import Scheme
from he.release import DPNoise, Release
from he.spec import OutOfRange, Statistic, StatsSpec, real_scales


def _as_table(table: npt.ArrayLike | Mapping[str, npt.ArrayLike], spec: StatsSpec) -> Any:
    if isinstance(table, Mapping):
        missing = [c for c in spec.columns if c not in table]
        if missing:
            raise DataError(f"table lacks column(s) {missing}")
        columns = [np.asarray(table[c], dtype=np.float64).reshape(-1) for c in spec.columns]
        lengths = {len(c) for c in columns}
        if len(lengths) > 1:
            raise DataError("table columns have different lengths")
        data = np.stack(columns, axis=1) if columns else np.zeros((0, 0))
    else:
        data = np.asarray(table, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(spec.columns):
        raise DataError(
            f"table must be 2-D with {len(spec.columns)} columns {list(spec.columns)}, "
            f"got shape {data.shape}"
        )
    if data.shape[0] > spec.max_rows_per_owner:
        raise DataError(
            f"table has {data.shape[0]} rows; max_rows_per_owner is {spec.max_rows_per_owner}"
        )
    bad = [not bool(np.isfinite(data[:, i]).all()) for i in range(data.shape[1])]
    if any(bad):
        raise DataError(
            f"column(s) {[c for c, b in zip(spec.columns, bad, strict=True) if b]} "
            "hold NaN or infinite values"
        )
    return data


def _column(data: Any, spec: StatsSpec, name: str, low: float, high: float) -> Any:
    values = data[:, spec.columns.index(name)]
    if spec.out_of_range is OutOfRange.REFUSE and np.any((values < low) | (values > high)):
        raise DataError(f"column {name!r} has values outside its range [{low}, {high}]")
    return np.clip(values, low, high)


def sufficient_statistics(
    table: npt.ArrayLike | Mapping[str, npt.ArrayLike], spec: StatsSpec
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The plaintext sufficient statistics of one owner's table.

    Args:
        table: rows x ``spec.columns`` (2-D array in that column order), or column -> values.
        spec: the job's statistics spec.

    Returns:
        (integers for BFV, reals for CKKS), laid out as `StatsSpec.layout` says.

    Raises:
        DataError: wrong shape, non-finite values, too many rows, or (with ``out_of_range =
            "refuse"``) values outside a range.
    """
    data = _as_table(table, spec)
    layout = spec.layout
    integers = np.zeros(layout.n_integers, dtype=np.int64)
    integers[0] = data.shape[0]
    for h, start in zip(spec.histograms, layout.histogram_offsets, strict=True):
        values = _column(data, spec, h.column, h.low, h.high)
        counts, _ = np.histogram(values, bins=h.bins, range=(h.low, h.high))
        integers[start : start + h.bins] = counts
    reals = np.zeros(layout.n_reals, dtype=np.float64)
    if layout.n_reals:
        x = np.stack(
            [
                _column(data, spec, n, spec.range_of(n).low, spec.range_of(n).high)
                for n in layout.real_columns
            ],
            axis=1,
        ).reshape(data.shape[0], len(layout.real_columns))
        k = len(layout.real_columns)
        reals[:k] = x.sum(axis=0)
        gram = x.T @ x
        for index, (i, j) in enumerate(layout.products):
            reals[k + index] = gram[i, j]
    return integers, reals


def encrypt_statistics(
    public: PublicContext,
    table: npt.ArrayLike | Mapping[str, npt.ArrayLike],
    *,
    spec: StatsSpec,
    job_id: str,
    round: int,
    owner_id: str,
    signing_key: Ed25519PrivateKey,
    min_contributors: int = 2,
    attempt: int = 1,
    masking: Masking | None = None,
) -> bytes:
    """Encrypt one owner's sufficient statistics into a signed contribution.

    Args:
        public: the key holder's public context.
        table: the owner's rows (see `sufficient_statistics`).
        spec: the job's statistics spec.
        job_id: the job.
        round: the round.
        owner_id: this owner's enrolled id.
        signing_key: this owner's Ed25519 key (its public half is in the enrolment).
        min_contributors: the smallest cohort this owner's policy accepts (raises k).
        attempt: the attempt of the round (signed, so the key holder never mixes attempts).
        masking: this owner's masking key and the attempt's cohort (`he.masking`): the
            plaintexts get pairwise zero-sum masks in Z_t, so only the cohort's sum means
            anything; None: unmasked.

    Returns:
        CONTRIBUTION envelope bytes for the coordinator.

    Raises:
        SpecError: the spec cannot run under these parameters without overflow.
        DataError: the table does not fit the spec.
    """
    if not isinstance(spec, StatsSpec):
        raise SpecError("encrypt_statistics needs a StatsSpec")
    spec.check_params(public.params)
    integers, reals = sufficient_statistics(table, spec)
    if masking is not None:  # both sections masked in Z_t, reals in BFV fixed point
        bfv, ckks = encoding.encrypt_masked(
            public, spec, integers, reals / real_scales(spec), masking
        )
    else:
        bfv_params = public.params_for(Scheme.BFV)
        bfv = encoding.encrypt(public.tenseal(Scheme.BFV), bfv_params, integers)
        ckks = []  # the reals section: CKKS, or BFV fixed point without CKKS
        if reals.size:
            ckks = encoding.encrypt_reals(public, spec, reals / real_scales(spec))
    receipt = sign_receipt(
        signing_key,
        job_id=check_id(job_id, "job_id"),
        round=check_round(round),
        attempt=check_attempt(attempt),
        fingerprint=public.fingerprint,
        spec_digest=spec.digest,
        payload="statistics",
        owner_id=check_id(owner_id, "owner_id"),
        min_contributors=check_min_contributors(min_contributors),
        ciphertext_digest=_wire.digest_blobs([*bfv, *ckks]),
        ciphertext_bytes=sum(len(b) for b in [*bfv, *ckks]),
        cohort=masking.cohort.digest if masking is not None else "",
    )
    return encode_contribution(receipt, bfv, ckks)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class StatisticsResult:
    """The requested statistics, computed from released sufficient statistics.

    ``tolerance`` holds stated bounds on |result - pooled plaintext result| (without DP noise):
    ``sum``, ``mean``, ``variance``, ``std`` per column and ``covariance`` per pair.
    Counts and histograms are exact unless DP noise was added.
    """

    count: int
    contributors: tuple[str, ...]
    sum: dict[str, float] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    variance: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    quantiles: dict[str, dict[float, float]] = field(default_factory=dict)
    matrix_columns: tuple[str, ...] = ()
    covariance: npt.NDArray[np.float64] | None = None
    correlation: npt.NDArray[np.float64] | None = None
    ols: OLSResult | None = None
    tolerance: dict[str, Any] = field(default_factory=dict)
    dp: DPNoise | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN becomes None)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float):
                return None if not np.isfinite(value) else value
            if isinstance(value, dict):
                return {str(k): clean(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [clean(v) for v in value]
            if isinstance(value, np.ndarray):
                return clean(value.tolist())
            return value

        out: dict[str, Any] = {
            "count": self.count,
            "contributors": list(self.contributors),
            "sum": self.sum,
            "mean": self.mean,
            "variance": self.variance,
            "std": self.std,
            "histograms": {
                k: {"edges": list(h.edges), "counts": list(h.counts)}
                for k, h in self.histograms.items()
            },
            "quantiles": self.quantiles,
            "matrix_columns": list(self.matrix_columns),
            "covariance": self.covariance,
            "correlation": self.correlation,
            "ols": None
            if self.ols is None
            else {
                "names": list(self.ols.names),
                "coefficients": list(self.ols.coefficients),
                "rss": self.ols.rss,
                "r2": self.ols.r2,
            },
            "tolerance": self.tolerance,
        }
        if self.dp is not None:
            out["dp"] = {"epsilon": self.dp.epsilon, "delta": self.dp.delta, "rho": self.dp.rho}
        return clean(out)  # type: ignore[no-any-return]


def finalize_statistics(release: Release) -> StatisticsResult:
    """Compute the requested statistics from a key-holder release.

    Raises:
        SpecError: the release holds a vector aggregation, not statistics.
    """
    spec = release.spec
    if not isinstance(spec, StatsSpec):
        raise SpecError("finalize_statistics needs a statistics release")
    parts = finalize(spec, release.integers, release.reals, release.tolerances())
    wants = spec.statistics
    return StatisticsResult(
        count=parts["count"],
        contributors=release.contributors,
        sum=parts["sum"] if Statistic.SUM in wants else {},
        mean=parts["mean"] if Statistic.MEAN in wants else {},
        variance=parts["variance"] if Statistic.VARIANCE in wants else {},
        std=parts["std"] if Statistic.STD in wants else {},
        histograms=parts["histograms"],
        quantiles=parts["quantiles"],
        matrix_columns=parts["matrix_columns"],
        covariance=parts["covariance"] if Statistic.COVARIANCE in wants else None,
        correlation=parts["correlation"] if Statistic.CORRELATION in wants else None,
        ols=parts["ols"],
        tolerance=parts["tolerance"],
        dp=release.dp,
    )
