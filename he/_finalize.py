"""From released sufficient statistics to the requested statistics (pure numpy, no HE).

Tolerances, with t_X the stated tolerance of a released value X, S a sum, P a sum of products
and n the exact count:

* mean: t_S / n;
* covariance of i and j (variance when i = j):
  (t_P + (|S_i| t_Sj + |S_j| t_Si + t_Si t_Sj) / n) / (n - ddof);
* standard deviation: min(sqrt(d), d / sqrt(var)) for a variance tolerance d.

A variance within its tolerance of zero makes the column's correlations NaN (a constant column).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from he.spec import Statistic, StatsSpec


@dataclass(frozen=True, slots=True)
class Histogram:
    """Fixed-width bin edges (bins + 1) and counts (bins)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OLSResult:
    """OLS coefficients (intercept first when fitted), residual sum of squares and R^2."""

    names: tuple[str, ...]
    coefficients: tuple[float, ...]
    rss: float
    r2: float


def quantile_from_histogram(hist: Histogram, q: float) -> float:
    """The q-quantile of a histogram (NaN when empty).

    Interpolates linearly inside the bin where the cumulative count reaches q times the total.
    """
    counts = np.maximum(np.asarray(hist.counts, dtype=np.float64), 0.0)
    total = float(counts.sum())
    if total <= 0:
        return math.nan
    target = q * total
    cum = np.cumsum(counts)
    b = int(np.searchsorted(cum, target, side="left"))
    b = min(b, len(counts) - 1)
    before = float(cum[b - 1]) if b > 0 else 0.0
    frac = (target - before) / counts[b] if counts[b] > 0 else 0.0
    width = hist.edges[1] - hist.edges[0]
    return float(hist.edges[0] + (b + min(max(frac, 0.0), 1.0)) * width)


def _std_tol(var: float, tol: float) -> float:
    return min(math.sqrt(tol), tol / math.sqrt(var)) if var > 0 else math.sqrt(tol)


def finalize(
    spec: StatsSpec,
    integers: npt.NDArray[np.int64],
    reals: npt.NDArray[np.float64],
    tolerances: npt.NDArray[np.float64],
) -> dict[str, Any]:
    """All statistics the spec's sufficient statistics allow (the caller picks the requested)."""
    layout = spec.layout
    n = int(integers[0])
    out: dict[str, Any] = {"count": n, "histograms": {}, "quantiles": {}}
    for h, start in zip(spec.histograms, layout.histogram_offsets, strict=True):
        edges = tuple(float(e) for e in np.linspace(h.low, h.high, h.bins + 1))
        hist = Histogram(edges, tuple(int(c) for c in integers[start : start + h.bins]))
        out["histograms"][h.column] = hist
        if Statistic.QUANTILES in spec.statistics:
            out["quantiles"][h.column] = {
                q: quantile_from_histogram(hist, q) for q in spec.quantiles
            }
    names = layout.real_columns
    k = len(names)
    sums = {name: float(reals[i]) for i, name in enumerate(names)}
    t_sum = {name: float(tolerances[i]) for i, name in enumerate(names)}
    prod = {pair: float(reals[k + idx]) for idx, pair in enumerate(layout.products)}
    t_prod = {pair: float(tolerances[k + idx]) for idx, pair in enumerate(layout.products)}
    dof = n - spec.ddof

    def cov_tol(i: int, j: int) -> float:
        si, sj = sums[names[i]], sums[names[j]]
        ti, tj = t_sum[names[i]], t_sum[names[j]]
        return (t_prod[(min(i, j), max(i, j))] + (abs(si) * tj + abs(sj) * ti + ti * tj) / n) / dof

    tol: dict[str, Any] = {"sum": t_sum, "mean": {}, "variance": {}, "std": {}}
    means, variances, stds = {}, {}, {}
    for i, name in enumerate(names):
        s = sums[name]
        means[name] = s / n if n > 0 else math.nan
        tol["mean"][name] = t_sum[name] / n if n > 0 else math.nan
        if (i, i) in prod and dof > 0:
            var_tol = cov_tol(i, i)
            var = max((prod[(i, i)] - s * s / n) / dof, 0.0)
            variances[name], stds[name] = var, math.sqrt(var)
            tol["variance"][name], tol["std"][name] = var_tol, _std_tol(var, var_tol)
        elif (i, i) in prod:
            variances[name] = stds[name] = math.nan
    out.update(sum=sums, mean=means, variance=variances, std=stds)
    out["matrix_columns"] = ()
    out["covariance"] = out["correlation"] = None
    cross = {Statistic.COVARIANCE, Statistic.CORRELATION} & spec.statistics
    if cross:
        cols = tuple(spec.moment_columns)
        idx = [names.index(c) for c in cols]
        cov = np.full((len(cols), len(cols)), math.nan)
        cov_t = np.full((len(cols), len(cols)), math.nan)
        if dof > 0:
            for a, i in enumerate(idx):
                for b, j in enumerate(idx):
                    si, sj = sums[names[i]], sums[names[j]]
                    cov[a, b] = (prod[(min(i, j), max(i, j))] - si * sj / n) / dof
                    cov_t[a, b] = cov_tol(i, j)
            np.fill_diagonal(cov, np.maximum(np.diag(cov), 0.0))
        diag = np.diag(cov).copy()
        ok = diag > np.diag(cov_t)
        corr = np.full_like(cov, math.nan)
        scale = np.sqrt(np.where(ok, diag, 1.0))
        both = np.outer(ok, ok)
        corr[both] = (cov / np.outer(scale, scale))[both]
        corr = np.clip(corr, -1.0, 1.0, where=both, out=corr)
        out.update(matrix_columns=cols, covariance=cov, correlation=corr)
        tol["covariance"] = cov_t.tolist()
    out["ols"] = _ols(spec, n, names, sums, prod) if spec.ols is not None else None
    out["tolerance"] = tol
    return out


def _ols(
    spec: StatsSpec,
    n: int,
    names: tuple[str, ...],
    sums: dict[str, float],
    prod: dict[tuple[int, int], float],
) -> Any:
    assert spec.ols is not None  # noqa: S101 - narrowing for mypy; checked by the caller
    ols = spec.ols
    feats = [names.index(f) for f in ols.features]
    y = names.index(ols.target)

    def p(i: int, j: int) -> float:
        return prod[(min(i, j), max(i, j))]

    xtx = np.array([[p(i, j) for j in feats] for i in feats], dtype=np.float64)
    xty = np.array([p(i, y) for i in feats], dtype=np.float64)
    labels = list(ols.features)
    if ols.intercept:
        s_f = np.array([sums[names[i]] for i in feats])
        xtx = np.block([[np.array([[float(n)]]), s_f[None, :]], [s_f[:, None], xtx]])
        xty = np.concatenate([[sums[ols.target]], xty])
        labels = ["intercept", *labels]
    if n <= 0:
        nan = tuple(math.nan for _ in labels)
        return OLSResult(tuple(labels), nan, math.nan, math.nan)
    beta, *_ = np.linalg.lstsq(xtx, xty, rcond=None)
    yy = p(y, y)
    rss = max(yy - float(beta @ xty), 0.0)
    tss = yy - (sums[ols.target] ** 2 / n if ols.intercept else 0.0)
    r2 = 1.0 - rss / tss if tss > 0 else math.nan
    return OLSResult(tuple(labels), tuple(float(b) for b in beta), rss, r2)
