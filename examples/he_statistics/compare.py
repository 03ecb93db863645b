"""Compare a run's statistics.json with numpy on the pooled rows of the five hospitals.

Run:  python examples/he_statistics/compare.py out/he_statistics/statistics.json

The pooled rows are exactly the rows the simulated hospitals hold (the job's data set, split by
``fl_core.stats.dataset_tables``); numpy computes every statistic on them in the clear. Counts and
histograms must be equal; every moment must lie within the tolerance the release states.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fl_core.config import load_job
from fl_core.stats import dataset_tables
from he._finalize import Histogram, quantile_from_histogram

JOB = Path(__file__).resolve().parent / "job.toml"


def main(path: Path) -> int:
    """Print the largest deviations and whether each is within its stated tolerance."""
    result = json.loads(path.read_text())["statistics"]
    job = load_job(JOB)
    assert job.stats is not None
    spec = job.stats.spec()
    tables = dataset_tables(job)
    cols = list(spec.moment_columns)
    data = np.concatenate([np.column_stack([t[c] for c in cols]) for t in tables])
    tol = result["tolerance"]
    ok = result["count"] == len(data)
    print(f"count: {result['count']} (numpy {len(data)})")
    print(f"{'statistic':12} {'max |bulwark - numpy|':>22} {'max stated tolerance':>21} within")
    checks = {
        "sum": (data.sum(axis=0), tol["sum"]),
        "mean": (data.mean(axis=0), tol["mean"]),
        "variance": (data.var(axis=0, ddof=spec.ddof), tol["variance"]),
        "std": (data.std(axis=0, ddof=spec.ddof), tol["std"]),
    }
    for name, (expected, bounds) in checks.items():
        got = np.array([result[name][c] for c in cols])
        bound = np.array([bounds[c] for c in cols])
        diff = np.abs(got - expected)
        within = bool(np.all(diff <= bound + 1e-10 * np.abs(expected)))
        ok &= within
        print(f"{name:12} {diff.max():22.3e} {bound.max():21.3e} {within}")
    cov = np.cov(data, rowvar=False, ddof=spec.ddof)
    diff = np.abs(np.array(result["covariance"]) - cov)
    bound = np.array(tol["covariance"])
    within = bool(np.all(diff <= bound + 1e-10 * np.abs(cov)))
    ok &= within
    print(f"{'covariance':12} {diff.max():22.3e} {bound.max():21.3e} {within}")
    corr = np.abs(np.array(result["correlation"]) - np.corrcoef(data, rowvar=False)).max()
    print(f"{'correlation':12} {corr:22.3e}")
    design = np.column_stack([np.ones(len(data)), data[:, :-1]])
    beta, *_ = np.linalg.lstsq(design, data[:, -1], rcond=None)
    rel = np.abs(np.array(result["ols"]["coefficients"]) - beta) / np.abs(beta)
    print(f"{'OLS coef':12} {'max relative ' + format(rel.max(), '.3e'):>22}")
    for h in spec.histograms:
        x = np.clip(data[:, cols.index(h.column)], h.low, h.high)
        counts, edges = np.histogram(x, bins=h.bins, range=(h.low, h.high))
        same = result["histograms"][h.column]["counts"] == counts.tolist()
        hist = Histogram(tuple(edges.tolist()), tuple(counts.tolist()))
        qs = all(
            result["quantiles"][h.column][str(q)] == quantile_from_histogram(hist, q)
            for q in spec.quantiles
        )
        ok &= same and qs
        print(f"histogram {h.column}: counts equal {same}; quantiles equal {qs}")
    print("all within the stated tolerances" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/he_statistics/statistics.json")))
