"""Statistics against numpy on the pooled data, through the whole encrypted pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import he
from he._finalize import Histogram, quantile_from_histogram

OWNERS = tuple(f"hospital-{i}" for i in range(5))  # as in conftest.py


@pytest.fixture(scope="module")
def keyholder(enrolment: dict[str, bytes]) -> he.KeyHolder:
    """The default path of a statistics job: exact BFV, reals in fixed point (he.fixed)."""
    return he.KeyHolder.generate(he.BFV_8192, min_contributors=3, enrolment=enrolment)


@pytest.fixture(scope="module")
def public(keyholder: he.KeyHolder) -> he.PublicContext:
    return he.PublicContext.from_bytes(keyholder.public_context().to_bytes())


ALL = ["count", "sum", "mean", "variance", "std", "histogram", "quantiles", "covariance",
       "correlation", "ols"]  # fmt: skip


def run_job(contribute, public, enrolment, keyholder, tables, spec, *, round=0):
    contributions = [
        contribute(owner, table, spec, round=round)
        for owner, table in zip(OWNERS, tables, strict=False)
    ]
    aggregator = he.Aggregator(public, spec=spec, job_id="job-1", round=round, enrolment=enrolment)
    for data in contributions:
        aggregator.add(data)
    request = aggregator.request(attempt=1)
    release = he.Release.from_bytes(keyholder.decrypt(request.to_bytes()).to_bytes())
    return he.finalize_statistics(release), release


def diabetes_spec(names: list[str], table: np.ndarray, **extra) -> he.StatsSpec:
    clip = {n: [float(table[:, i].min()), float(table[:, i].max())] for i, n in enumerate(names)}
    return he.spec_from_dict(
        {
            "columns": names,
            "statistics": ALL,
            "moment_columns": names,
            "clip": clip,
            "histograms": {
                "bmi": {"bins": 12, "range": clip["bmi"]},
                "y": {"bins": 25, "range": [0, 400]},
            },
            "quantiles": [0.1, 0.5, 0.9],
            "ols": {"target": "y", "features": names[:-1]},
            "max_rows_per_owner": 500,
            "max_owners": 8,
        }
        | extra
    )


@pytest.fixture(scope="module")
def diabetes_run(diabetes, contribute, public, enrolment, keyholder):
    table, names = diabetes
    spec = diabetes_spec(names, table)
    # uneven split across five hospitals, one of them with no rows at all
    cuts = [0, 150, 150, 260, 380, len(table)]
    tables = [table[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    result, release = run_job(contribute, public, enrolment, keyholder, tables, spec)
    return table, names, spec, result, release


def test_count_is_exact(diabetes_run) -> None:
    table, _, _, result, release = diabetes_run
    assert result.count == len(table) == 442
    assert release.contributors == OWNERS


def test_sums_and_means_within_stated_tolerance(diabetes_run) -> None:
    table, names, _, result, release = diabetes_run
    assert 0 < release.real_tolerance < 1e-5
    for i, name in enumerate(names):
        assert abs(result.sum[name] - table[:, i].sum()) <= result.tolerance["sum"][name]
        assert abs(result.mean[name] - table[:, i].mean()) <= result.tolerance["mean"][name]


def test_variance_and_std_within_stated_tolerance(diabetes_run) -> None:
    table, names, _, result, _ = diabetes_run
    for i, name in enumerate(names):
        var = table[:, i].var(ddof=1)
        assert abs(result.variance[name] - var) <= result.tolerance["variance"][name]
        assert abs(result.std[name] - math.sqrt(var)) <= result.tolerance["std"][name]


def test_covariance_and_correlation(diabetes_run) -> None:
    table, _, _, result, _ = diabetes_run
    cov_tol = np.array(result.tolerance["covariance"])
    assert np.all(np.abs(result.covariance - np.cov(table.T)) <= cov_tol)
    np.testing.assert_allclose(result.correlation, np.corrcoef(table.T), rtol=0, atol=1e-6)


def test_histograms_are_exact(diabetes_run) -> None:
    table, names, spec, result, _ = diabetes_run
    for h in spec.histograms:
        column = table[:, names.index(h.column)]
        expected, edges = np.histogram(column, bins=h.bins, range=(h.low, h.high))
        assert result.histograms[h.column].counts == tuple(expected)
        np.testing.assert_allclose(result.histograms[h.column].edges, edges)


def test_quantiles_equal_the_pooled_histogram_quantiles(diabetes_run) -> None:
    table, names, spec, result, _ = diabetes_run
    for h in spec.histograms:
        column = table[:, names.index(h.column)]
        counts, edges = np.histogram(column, bins=h.bins, range=(h.low, h.high))
        pooled = Histogram(tuple(edges), tuple(int(c) for c in counts))
        width = (h.high - h.low) / h.bins
        for q in spec.quantiles:
            assert result.quantiles[h.column][q] == quantile_from_histogram(pooled, q)
            # and the histogram quantile is within one bin of the sample quantile
            assert abs(result.quantiles[h.column][q] - np.quantile(column, q)) <= width


def test_ols_matches_lstsq_on_pooled_data(diabetes_run) -> None:
    table, names, _, result, _ = diabetes_run
    design = np.column_stack([np.ones(len(table)), table[:, :-1]])
    beta, rss, *_ = np.linalg.lstsq(design, table[:, -1], rcond=None)
    assert result.ols is not None
    assert result.ols.names == ("intercept", *names[:-1])
    np.testing.assert_allclose(result.ols.coefficients, beta, rtol=1e-4, atol=1e-3)
    tss = ((table[:, -1] - table[:, -1].mean()) ** 2).sum()
    assert result.ols.r2 == pytest.approx(1 - rss[0] / tss, abs=1e-6)


def test_result_serializes_to_plain_json(diabetes_run) -> None:
    import json

    result = diabetes_run[3]
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert json.loads(text)["count"] == 442


def test_breast_cancer_moments_and_counts(breast_cancer, contribute, public, enrolment, keyholder):
    # Prepare: 31 columns, the 0/1 label as histogram, three owners
    table, names = breast_cancer
    spec = he.spec_from_dict(
        {
            "columns": names,
            "statistics": ["count", "mean", "variance", "correlation", "histogram"],
            "moment_columns": names[:10],
            "clip": {n: [0.0, float(table[:, i].max())] for i, n in enumerate(names)},
            "histograms": {"label": {"bins": 2, "range": [0, 1]}},
            "max_rows_per_owner": 400,
            "max_owners": 8,
        }
    )
    tables = np.array_split(table, 3)

    # Execute
    result, _ = run_job(contribute, public, enrolment, keyholder, tables, spec)

    # Assert
    assert result.count == 569
    assert result.histograms["label"].counts == (212, 357)
    for i, name in enumerate(names[:10]):
        assert abs(result.mean[name] - table[:, i].mean()) <= result.tolerance["mean"][name]
        var = table[:, i].var(ddof=1)
        assert abs(result.variance[name] - var) <= result.tolerance["variance"][name]
    np.testing.assert_allclose(result.correlation, np.corrcoef(table[:, :10].T), atol=1e-6)
    assert result.sum == {}  # not requested


def test_constant_column_and_values_at_range_limits(contribute, public, enrolment, keyholder):
    # Prepare: column "c" is constant; "x" sits exactly on both ends of its range
    spec = he.spec_from_dict(
        {
            "columns": ["c", "x"],
            "statistics": ["count", "mean", "variance", "std", "correlation", "histogram"],
            "moment_columns": ["c", "x"],
            "clip": {"c": [-10.0, 10.0], "x": [-1000.0, 1000.0]},
            "histograms": {"x": {"bins": 4, "range": [-1000.0, 1000.0]}},
            "max_rows_per_owner": 1000,
            "max_owners": 8,
            "out_of_range": "refuse",
        }
    )
    rng = np.random.default_rng(7)
    tables = []
    for size in (1000, 3, 500):
        x = rng.uniform(-1000, 1000, size)
        x[0], x[-1] = -1000.0, 1000.0
        tables.append(np.column_stack([np.full(size, 3.5), x]))
    pooled = np.vstack(tables)

    # Execute
    result, _ = run_job(contribute, public, enrolment, keyholder, tables, spec)

    # Assert
    assert result.count == 1503
    assert abs(result.mean["c"] - 3.5) <= result.tolerance["mean"]["c"]
    assert result.variance["c"] <= result.tolerance["variance"]["c"]
    assert np.isnan(result.correlation[0, 1]) and np.isnan(result.correlation[0, 0])
    assert result.correlation[1, 1] == pytest.approx(1.0)
    assert abs(result.variance["x"] - pooled[:, 1].var(ddof=1)) <= result.tolerance["variance"]["x"]
    expected, _ = np.histogram(pooled[:, 1], bins=4, range=(-1000, 1000))
    assert result.histograms["x"].counts == tuple(expected)


def test_owner_with_no_rows_only(contribute, public, enrolment, keyholder, diabetes):
    # All contributing owners are empty: count 0, means undefined (NaN), no numpy warnings
    table, names = diabetes
    spec = diabetes_spec(names, table)
    tables = [table[:0]] * 3
    result, _ = run_job(contribute, public, enrolment, keyholder, tables, spec, round=5)
    assert result.count == 0
    assert math.isnan(result.mean["age"])
    assert all(c == 0 for c in result.histograms["y"].counts)
    assert math.isnan(result.quantiles["y"][0.5])


def test_sufficient_statistics_oracle() -> None:
    # The vectorised computation against a row-by-row loop
    spec = he.spec_from_dict(
        {
            "columns": ["a", "b", "c"],
            "statistics": ["covariance", "histogram"],
            "moment_columns": ["a", "b", "c"],
            "clip": {"a": [-1, 1], "b": [0, 5], "c": [-2, 2]},
            "histograms": {"b": {"bins": 5, "range": [0, 5]}},
            "max_rows_per_owner": 100,
            "max_owners": 4,
        }
    )
    rng = np.random.default_rng(3)
    table = rng.uniform(-3, 6, size=(50, 3))
    ints, reals = he.sufficient_statistics(table, spec)
    clipped = np.column_stack(
        [np.clip(table[:, 0], -1, 1), np.clip(table[:, 1], 0, 5), np.clip(table[:, 2], -2, 2)]
    )
    expected_reals = [sum(clipped[:, j]) for j in range(3)]
    for i in range(3):
        for j in range(i, 3):
            expected_reals.append(sum(r[i] * r[j] for r in clipped))
    bins = [0] * 5
    for value in clipped[:, 1]:
        bins[min(int(value), 4)] += 1
    assert list(ints) == [50, *bins]
    np.testing.assert_allclose(reals, expected_reals, rtol=1e-12)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (np.zeros((3, 2)), "2-D with 3 columns"),
        (np.array([[1.0, np.nan, 0.0]]), r"column\(s\) \['b'\] hold NaN"),
        (np.zeros((11, 3)), "max_rows_per_owner is 10"),
        (np.array([[0.0, 9.0, 0.0]]), "outside its range"),
    ],
)
def test_bad_tables_are_refused(table: np.ndarray, message: str) -> None:
    spec = he.spec_from_dict(
        {
            "columns": ["a", "b", "c"],
            "statistics": ["mean"],
            "moment_columns": ["a", "b"],
            "clip": {"a": [-1, 1], "b": [0, 5]},
            "max_rows_per_owner": 10,
            "max_owners": 4,
            "out_of_range": "refuse",
        }
    )
    with pytest.raises(he.DataError, match=message):
        he.sufficient_statistics(table, spec)


def test_mapping_table_is_accepted() -> None:
    spec = he.spec_from_dict(
        {"columns": ["a"], "statistics": ["count"], "max_rows_per_owner": 10, "max_owners": 2}
    )
    ints, reals = he.sufficient_statistics({"a": [1.0, 2.0]}, spec)
    assert list(ints) == [2] and reals.size == 0


def _quantile_oracle(edges, counts, q):
    # walk the bins one by one until the cumulative count reaches q * total
    total = sum(max(c, 0) for c in counts)
    if total == 0:
        return math.nan
    target, before = q * total, 0.0
    for b, c in enumerate(counts):
        c = max(c, 0)
        if before + c >= target and c > 0:
            return edges[b] + (target - before) / c * (edges[b + 1] - edges[b])
        before += c
    return edges[-1]


@given(
    counts=st.lists(st.integers(0, 50), min_size=1, max_size=12),
    q=st.floats(0.01, 0.99),
)
def test_quantile_matches_loop_oracle(counts: list[int], q: float) -> None:
    edges = tuple(float(e) for e in np.linspace(-3.0, 5.0, len(counts) + 1))
    hist = Histogram(edges, tuple(counts))
    got = quantile_from_histogram(hist, q)
    expected = _quantile_oracle(edges, counts, q)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-9)
