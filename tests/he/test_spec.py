from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import he
from he.spec import Layout

BASE = {
    "columns": ["x", "y", "z"],
    "statistics": ["count", "mean", "variance", "histogram", "quantiles", "ols", "covariance"],
    "moment_columns": ["x", "y"],
    "clip": {"x": [-1, 1], "y": [0, 10], "z": [-3, 3]},
    "histograms": {"y": {"bins": 4, "range": [0, 10]}},
    "quantiles": [0.5],
    "ols": {"target": "z", "features": ["x", "y"], "intercept": True},
    "max_rows_per_owner": 100,
    "max_owners": 5,
    "dp": {"epsilon": 2.0, "delta": 1e-5},
}


def test_dict_round_trip_and_digest_is_stable() -> None:
    spec = he.spec_from_dict(BASE)
    again = he.spec_from_dict(spec.to_dict())
    assert again == spec
    assert again.digest == spec.digest
    assert he.spec_from_dict({**BASE, "max_owners": 6}).digest != spec.digest


def test_layout() -> None:
    spec = he.spec_from_dict(BASE)
    assert spec.layout == Layout(
        n_integers=1 + 4,
        n_reals=3 + 6,
        histogram_offsets=(1,),
        real_columns=("x", "y", "z"),
        products=((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)),
    )
    assert spec.real_bounds() == [1.0, 10.0, 3.0, 1.0, 10.0, 3.0, 100.0, 30.0, 9.0]


def test_variance_only_needs_squares() -> None:
    spec = he.spec_from_dict({**BASE, "statistics": ["variance"], "ols": None} | {"dp": None})
    assert spec.layout.products == ((0, 0), (1, 1))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"columns": []}, "columns must be"),
        ({"columns": ["x", "x", "z"]}, "columns must be"),
        ({"statistics": ["median"]}, "unknown value"),
        ({"max_owners": 1}, r"max_owners must be an integer in \[2,"),
        ({"max_rows_per_owner": 0}, "max_rows_per_owner"),
        ({"ddof": 2}, "ddof must be 0 or 1"),
        ({"clip": {"x": [1, -1], "y": [0, 10], "z": [-3, 3]}}, r"clip.x must be finite"),
        ({"clip": {"x": [-1, 1], "z": [-3, 3]}}, "clip.y is required"),
        ({"histograms": {"y": {"bins": 0, "range": [0, 10]}}}, r"histograms.y.bins must be in"),
        ({"histograms": {"w": {"bins": 2, "range": [0, 1]}}}, "histograms must name"),
        ({"quantiles": [1.5]}, r"quantiles must be .* in \(0, 1\)"),
        ({"ols": {"target": "x", "features": ["x"]}}, "must not be one of ols.features"),
        ({"ols": {"target": "q", "features": ["x"]}}, "ols names unknown column 'q'"),
        ({"dp": {"epsilon": 0, "delta": 1e-5}}, r"dp.epsilon must lie in \(0, 100\]"),
        ({"dp": {"epsilon": 1, "delta": 1}}, r"dp.delta must lie in \(0, 1\)"),
        ({"extra": 1}, "unknown key"),
        ({"type": "table"}, "type must be"),
        ({"out_of_range": "wrap"}, "unknown value"),
    ],
)
def test_errors_name_the_field(changes: dict, message: str) -> None:
    with pytest.raises(he.SpecError, match=message):
        he.spec_from_dict({**BASE, **changes})


def test_statistics_without_their_tables_are_refused() -> None:
    with pytest.raises(he.SpecError, match="'ols' and the ols table"):
        he.spec_from_dict({k: v for k, v in BASE.items() if k != "ols"})
    with pytest.raises(he.SpecError, match="need at least one entry in histograms"):
        he.spec_from_dict({**BASE, "histograms": {}})


@given(epsilon=st.floats(0.01, 100), delta=st.floats(1e-12, 0.5))
def test_dp_rho_converts_back_to_epsilon(epsilon: float, delta: float) -> None:
    rho = he.DPSpec(epsilon=epsilon, delta=delta).rho
    assert rho + 2 * math.sqrt(rho * math.log(1 / delta)) == pytest.approx(epsilon, rel=1e-9)


def test_vector_spec_round_trip() -> None:
    spec = he.VectorSpec(length=10, max_abs=0.5, max_owners=3)
    assert he.spec_from_dict(spec.to_dict()) == spec
    with pytest.raises(he.SpecError, match="max_abs must be a finite number > 0"):
        he.VectorSpec(length=10, max_abs=math.inf, max_owners=3)


def test_layout_survives_canonical_json_key_order() -> None:
    # Prepare: histogram tables in the opposite order of the columns ("z" before "x")
    spec = he.spec_from_dict(
        {
            "columns": ["x", "z"],
            "statistics": ["histogram"],
            "histograms": {"z": {"bins": 3, "range": [0, 1]}, "x": {"bins": 2, "range": [0, 1]}},
            "max_rows_per_owner": 10,
            "max_owners": 2,
        }
    )

    # Execute: what the key holder parses from an aggregate envelope (keys sorted)
    import json

    from he import _wire

    parsed = he.spec_from_dict(json.loads(_wire.canonical_json(spec.to_dict())))

    # Assert
    assert parsed == spec
    assert parsed.layout == spec.layout
    assert [h.column for h in spec.histograms] == ["x", "z"]


def test_spec_from_a_toml_job_table() -> None:
    import tomllib

    text = """
    [stats]
    columns = ["age", "bmi", "y"]
    statistics = ["count", "mean", "std", "histogram", "quantiles", "ols"]
    moment_columns = ["age", "bmi"]
    quantiles = [0.25, 0.5, 0.75]
    max_rows_per_owner = 10000
    max_owners = 16

    [stats.clip]
    age = [0, 120]
    bmi = [10, 60]
    y = [0, 400]

    [stats.histograms.age]
    bins = 12
    range = [0, 120]

    [stats.ols]
    target = "y"
    features = ["age", "bmi"]
    """
    spec = he.spec_from_dict(tomllib.loads(text)["stats"])
    assert isinstance(spec, he.StatsSpec)
    assert spec.layout.real_columns == ("age", "bmi", "y")
    assert spec.check_params(he.DEFAULT_STATS_PARAMS) is None
