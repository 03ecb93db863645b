"""Test support for HE jobs: statistics job files, diabetes tables and the numpy oracle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fl_core.config import JobConfig, parse_job
from he._finalize import Histogram, quantile_from_histogram

COLUMNS = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "target")
CLIP = {
    "age": (0, 120), "sex": (1, 2), "bmi": (10, 60), "bp": (40, 200), "s1": (50, 400),
    "s2": (20, 300), "s3": (10, 150), "s4": (1, 12), "s5": (2, 8), "s6": (40, 160),
    "target": (0, 400),
}  # fmt: skip
HISTOGRAMS = {"age": (12, 0, 120), "bmi": (20, 10, 60), "target": (20, 0, 400)}
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def stats_job_text(
    *,
    name: str = "stats-test",
    owners: int = 5,
    min_clients: int = 5,
    k: int = 3,
    timeout: float = 20.0,
    out_of_range: str = "clip",
    extra: str = "",
) -> str:
    clip = ", ".join(f"{c} = [{lo}, {hi}]" for c, (lo, hi) in CLIP.items())
    hists = "\n".join(
        f"{c} = {{ bins = {b}, range = [{lo}, {hi}] }}" for c, (b, lo, hi) in HISTOGRAMS.items()
    )
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    return f"""
[job]
name = "{name}"
kind = "stats"
seed = 5
[data]
dataset = "diabetes"
num_clients = {owners}
seed = 3
[sampling]
min_clients = {min_clients}
wait_for_clients_s = 30
[round]
stage_timeout_s = {timeout}
max_attempts = 1
[he]
min_contributors = {k}
[stats]
columns = [{cols}]
statistics = ["count", "sum", "mean", "variance", "std", "histogram", "quantiles",
              "covariance", "correlation", "ols"]
moment_columns = [{cols}]
max_rows_per_owner = 1000
max_owners = 8
out_of_range = "{out_of_range}"
quantiles = {list(QUANTILES)}
clip = {{ {clip} }}
[stats.histograms]
{hists}
[stats.ols]
target = "target"
features = [{cols.replace(', "target"', "")}]
{extra}
"""


def stats_job(**kwargs: Any) -> JobConfig:
    return parse_job(stats_job_text(**kwargs))


def pooled(tables: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
    """Rows x COLUMNS of all owners' tables together."""
    return np.concatenate(
        [np.column_stack([np.asarray(t[c], dtype=np.float64) for c in COLUMNS]) for t in tables]
    )


def assert_matches_pooled(result: Mapping[str, Any], data: np.ndarray) -> None:
    """Check released statistics against numpy on the pooled rows.

    Counts and histograms exactly (BFV), moments within the stated tolerance (the rounding of
    BFV fixed point, or CKKS flooding). OLS has no stated tolerance: with 26 fraction bits
    (BFV_8192 and at most 8000 rows) the normal equations' condition number brings its
    relative error to about 1e-6, so it is checked at 1e-5.
    """
    n = data.shape[0]
    assert result["count"] == n
    tol = result["tolerance"]
    for i, c in enumerate(COLUMNS):
        x = data[:, i]
        assert abs(result["sum"][c] - x.sum()) <= tol["sum"][c] + 1e-12 * abs(x.sum())
        assert abs(result["mean"][c] - x.mean()) <= tol["mean"][c] + 1e-12 * abs(x.mean())
        var = x.var(ddof=1)
        assert abs(result["variance"][c] - var) <= tol["variance"][c] + 1e-10 * var
        assert abs(result["std"][c] - x.std(ddof=1)) <= tol["std"][c] + 1e-10 * x.std(ddof=1)
    for c, (bins, lo, hi) in HISTOGRAMS.items():
        x = np.clip(data[:, COLUMNS.index(c)], lo, hi)
        counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
        assert result["histograms"][c]["counts"] == counts.tolist()
        hist = Histogram(tuple(edges.tolist()), tuple(counts.tolist()))
        for q in QUANTILES:
            assert result["quantiles"][c][str(q)] == quantile_from_histogram(hist, q)
    cov = np.cov(data, rowvar=False, ddof=1)
    bound = np.asarray(tol["covariance"]) + 1e-10 * np.abs(cov)
    np.testing.assert_array_less(np.abs(np.asarray(result["covariance"]) - cov), bound)
    np.testing.assert_allclose(result["correlation"], np.corrcoef(data, rowvar=False), atol=1e-8)
    design = np.column_stack([np.ones(n), data[:, :-1]])
    beta, *_ = np.linalg.lstsq(design, data[:, -1], rcond=None)
    np.testing.assert_allclose(result["ols"]["coefficients"], beta, rtol=1e-5, atol=1e-5)
