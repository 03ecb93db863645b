"""Building specs from plain dicts: the one place a TOML job table becomes a spec."""

from __future__ import annotations

from typing import Any

from he.errors import SpecError
from he.spec import (
    DEFAULT_DDOF,
    ColumnRange,
    DPSpec,
    HistogramSpec,
    OLSSpec,
    OutOfRange,
    Spec,
    Statistic,
    StatsSpec,
    VectorSpec,
    _is_int,
)


def spec_from_dict(data: Any) -> Spec:
    """Build a `StatsSpec` or `VectorSpec` from a plain dict (``type`` selects; default stats).

    Raises:
        SpecError: naming the field that is missing, has the wrong type or is out of range.
    """
    if not isinstance(data, dict):
        raise SpecError("a spec must be a table")
    kind = data.get("type", "statistics")
    if kind == "vector":
        _no_unknown(data, {"type", "length", "max_abs", "max_owners"}, "spec")
        return VectorSpec(
            length=_int(data, "length"),
            max_abs=_num(data.get("max_abs"), "max_abs"),
            max_owners=_int(data, "max_owners"),
        )
    if kind != "statistics":
        raise SpecError(f"type must be 'statistics' or 'vector', got {kind!r}")
    allowed = {
        "type", "columns", "statistics", "max_rows_per_owner", "max_owners", "moment_columns",
        "clip", "histograms", "quantiles", "ols", "ddof", "out_of_range", "dp",
    }  # fmt: skip
    _no_unknown(data, allowed, "spec")
    try:
        statistics = frozenset(Statistic(s) for s in _str_list(data, "statistics"))
        out_of_range = OutOfRange(data.get("out_of_range", OutOfRange.CLIP.value))
    except ValueError as exc:
        raise SpecError(f"statistics or out_of_range has an unknown value: {exc}") from exc
    clip = _table(data, "clip")
    hists = _table(data, "histograms")
    ols = data.get("ols")
    dp = data.get("dp")
    return StatsSpec(
        columns=tuple(_str_list(data, "columns")),
        statistics=statistics,
        max_rows_per_owner=_int(data, "max_rows_per_owner"),
        max_owners=_int(data, "max_owners"),
        moment_columns=tuple(_str_list(data, "moment_columns", default=[])),
        clip=tuple(
            ColumnRange(column=k, low=lo, high=hi)
            for k, (lo, hi) in ((k, _pair(v, f"clip.{k}")) for k, v in clip.items())
        ),
        histograms=tuple(_histogram(k, v) for k, v in hists.items()),
        quantiles=tuple(_num(q, "quantiles") for q in data.get("quantiles", [])),
        ols=None if ols is None else _ols(ols),
        ddof=_int(data, "ddof", default=DEFAULT_DDOF),
        out_of_range=out_of_range,
        dp=None if dp is None else _dp(dp),
    )


def _no_unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise SpecError(f"unknown key(s) in {where}: {sorted(unknown)}")


def _int(data: dict[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if not _is_int(value):
        raise SpecError(f"{key} must be an integer, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def _num(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{name} must be a number, got {value!r}")
    return float(value)


def _str_list(data: dict[str, Any], key: str, default: list[str] | None = None) -> list[str]:
    value = data.get(key, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{key} must be a list of strings")
    return list(value)


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"{key} must be a table keyed by column name")
    return value


def _pair(value: Any, name: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise SpecError(f"{name} must be a pair [low, high]")
    return _num(value[0], name), _num(value[1], name)


def _histogram(column: str, value: Any) -> HistogramSpec:
    if not isinstance(value, dict):
        raise SpecError(f"histograms.{column} must be a table with bins and range")
    _no_unknown(value, {"bins", "range"}, f"histograms.{column}")
    low, high = _pair(value.get("range"), f"histograms.{column}.range")
    return HistogramSpec(column=column, bins=_int(value, "bins"), low=low, high=high)


def _ols(value: Any) -> OLSSpec:
    if not isinstance(value, dict):
        raise SpecError("ols must be a table with target and features")
    _no_unknown(value, {"target", "features", "intercept"}, "ols")
    target = value.get("target")
    intercept = value.get("intercept", True)
    if not isinstance(target, str) or not isinstance(intercept, bool):
        raise SpecError("ols.target must be a column name and ols.intercept a boolean")
    return OLSSpec(target=target, features=tuple(_str_list(value, "features")), intercept=intercept)


def _dp(value: Any) -> DPSpec:
    if not isinstance(value, dict):
        raise SpecError("dp must be a table with epsilon and delta")
    _no_unknown(value, {"epsilon", "delta"}, "dp")
    return DPSpec(
        epsilon=_num(value.get("epsilon"), "dp.epsilon"),
        delta=_num(value.get("delta"), "dp.delta"),
    )
