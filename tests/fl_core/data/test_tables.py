"""An owner's table read by the job's schema: CSV, Parquet and .npz give the same arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fl_core.config import SchemaSection
from fl_core.data import load_table_data
from fl_core.errors import ConfigError

SCHEMA = SchemaSection(features=("age", "chol"), label="disease", test_fraction=0.25)


def _rows() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "id": np.arange(8),  # not in the schema: never read into the model
        "age": rng.integers(30, 80, size=8).astype(np.int64),
        "chol": rng.normal(200, 30, size=8),
        "disease": rng.integers(0, 2, size=8).astype(np.int64),
    }


def _write_csv(path: Path, rows: dict[str, np.ndarray]) -> Path:
    lines = [",".join(rows)] + [
        ",".join(repr(rows[c][i].item()) for c in rows) for i in range(len(rows["id"]))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    rows = _rows()
    csv = _write_csv(tmp_path / "rows.csv", rows)
    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.table(rows), parquet)
    npz = tmp_path / "rows.npz"
    np.savez(npz, **rows)
    return [csv, parquet, npz]


def test_three_formats_give_the_same_split(files: list[Path]) -> None:
    loaded = [load_table_data(f, SCHEMA, num_classes=2, seed=5) for f in files]

    rows = _rows()
    for data in loaded:
        assert data.x_train.shape == (6, 2) and data.x_test.shape == (2, 2)
        assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
        np.testing.assert_array_equal(data.x_train, loaded[0].x_train)
        np.testing.assert_array_equal(data.y_test, loaded[0].y_test)
    pooled = np.concatenate([loaded[0].x_train, loaded[0].x_test])
    expected = np.column_stack([rows["age"], rows["chol"]]).astype(np.float32)
    assert sorted(map(tuple, pooled.tolist())) == sorted(map(tuple, expected.tolist()))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": "chol"}, r"lacks the schema's columns \['chol'\]"),
        ({"set": ("disease", 3, "2")}, r"label 'disease' is 2 in data row 4; .* classes 0 \.\. 1"),
        ({"set": ("chol", 1, "")}, r"column 'chol' has an empty value in data row 2"),
        ({"set": ("age", 0, "old")}, r"column 'age' is not numeric"),
        ({"set": ("chol", 5, "inf")}, r"feature 'chol' is inf in data row 6"),
    ],
)
def test_bad_tables_are_named_by_column_and_row(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    rows = {k: v.astype(object) for k, v in _rows().items()}
    if "drop" in change:
        del rows[str(change["drop"])]
    if "set" in change:
        column, row, value = change["set"]  # type: ignore[misc]
        rows[column][row] = value
    path = tmp_path / "bad.csv"
    lines = [",".join(rows)] + [",".join(str(rows[c][i]) for c in rows) for i in range(8)]
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(ConfigError, match=message):
        load_table_data(path, SCHEMA, num_classes=2, seed=0)


def test_an_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--data reads \['.csv', '.parquet', '.npz'\]"):
        load_table_data(tmp_path / "rows.xlsx", SCHEMA, num_classes=2, seed=0)


def test_an_owner_schema_file_serves_a_job_without_one(tmp_path: Path, files: list[Path]) -> None:
    from fl_core.config import load_schema, parse_job
    from fl_core.owner import load_owner_data

    job = parse_job(
        '[job]\nname = "t"\n[data]\ndataset = "d"\n'
        '[model]\nname = "mlp"\ninput_shape = [2]\nnum_classes = 2\n'
    )
    schema_file = tmp_path / "schema.toml"
    schema_file.write_text('[schema]\nfeatures = ["age", "chol"]\nlabel = "disease"\n')
    wide = tmp_path / "wide.toml"
    wide.write_text('[schema]\nfeatures = ["age", "chol", "id"]\nlabel = "disease"\n')

    data = load_owner_data(job, partition=None, data=files[0], schema=load_schema(schema_file))

    assert data.x_train.shape[1] == 2 and len(data.y_train) + len(data.y_test) == 8
    with pytest.raises(ConfigError, match="--schema has 3 features; the job's model.input_shape"):
        load_owner_data(job, partition=None, data=files[0], schema=load_schema(wide))
    with pytest.raises(ConfigError, match="needs a schema"):
        load_owner_data(job, partition=None, data=files[0], schema=None)
    (tmp_path / "bad.toml").write_text("[other]\nx = 1\n")
    with pytest.raises(ConfigError, match="exactly one \\[schema\\] table"):
        load_schema(tmp_path / "bad.toml")
