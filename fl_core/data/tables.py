"""An owner's own table (CSV, Parquet or ``.npz``) read into arrays by a declared schema.

The job's ``[schema]`` (or a schema file) names the feature columns, the label column and their
dtypes. Only those columns are read; a missing column, a value that does not convert, a null, a
non-finite feature or a label outside ``0 .. num_classes - 1`` is refused with a message naming
the file, the column and the first bad row. CSV (with a header row) and Parquet are read with
pyarrow; ``.npz`` with ``allow_pickle=False``, one 1-D array per column. Nothing is evaluated or
unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..config import SchemaSection
from ..errors import ConfigError
from .federated import ClientData, WithdrawnMask

if TYPE_CHECKING:
    from ..client.deidentify import Deidentified, Deidentifier

TABLE_SUFFIXES = (".csv", ".parquet", ".npz")
"""The file types :func:`load_table_data` reads, by suffix."""


def _columns_pyarrow(
    path: Path, names: list[str], text: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> dict[str, npt.NDArray[np.generic]]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".csv":
            options = pacsv.ConvertOptions(column_types={n: pa.string() for n in text})
            table = pacsv.read_csv(path, convert_options=options)
        else:
            schema = pq.read_schema(path)
            present = [n for n in [*names, *optional] if n in schema.names]
            table = pq.read_table(path, columns=present)
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ConfigError(
            f"{path} lacks the schema's columns {missing}; it has {table.column_names[:20]}"
        )
    out: dict[str, npt.NDArray[np.generic]] = {}
    for name in [*names, *(n for n in optional if n in table.column_names)]:
        column = table.column(name)
        if column.null_count:
            first = next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
            raise ConfigError(f"{path}: column {name!r} has an empty value in data row {first + 1}")
        if name in text:
            column = column.cast(pa.string())
        out[name] = column.to_numpy(zero_copy_only=False)
    return out


def _columns_npz(
    path: Path, names: list[str], optional: tuple[str, ...] = ()
) -> dict[str, npt.NDArray[np.generic]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [n for n in names if n not in npz]
            if missing:
                raise ConfigError(
                    f"{path} lacks the schema's columns {missing} (one 1-D array per column); "
                    f"it has {sorted(npz.files)[:20]}"
                )
            out = {n: np.asarray(npz[n]) for n in [*names, *(o for o in optional if o in npz)]}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    for name, values in out.items():
        if values.ndim != 1:
            raise ConfigError(f"{path}: array {name!r} has shape {values.shape}, expected 1-D")
    lengths = {len(v) for v in out.values()}
    if len(lengths) != 1:
        raise ConfigError(f"{path}: the schema's columns differ in length ({sorted(lengths)})")
    return out


def _convert(path: Path, name: str, values: npt.NDArray[Any], dtype: str) -> npt.NDArray[Any]:
    if values.dtype.kind not in "iufb":
        raise ConfigError(
            f"{path}: column {name!r} is not numeric (dtype {values.dtype}); the schema reads it "
            f"as {dtype}"
        )
    if dtype == "int64" and values.dtype.kind == "f":
        whole = np.isfinite(values) & (values == np.round(values))
        if not whole.all():
            row = int(np.argmin(whole))
            raise ConfigError(
                f"{path}: label column {name!r} holds {values[row].item()!r} in data row "
                f"{row + 1}, not a class number"
            )
    return values.astype(dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerTable:
    """An owner's table as the job reads it, with what the owner did to it first.

    Attributes:
        data: the arrays (record ids pseudonymized when the policy says so).
        raw_ids: the rows' record ids as in the file (train, then test; empty without an id
            column): the owner matches withdrawals against these, never the job's code.
        excluded: rows left out as withdrawn.
        deidentified: what de-identification did (``None``: the policy asks for none).
    """

    data: ClientData
    raw_ids: tuple[str, ...] = ()
    excluded: int = 0
    deidentified: Deidentified | None = None


def load_table_data(
    path: Path, schema: SchemaSection, *, num_classes: int, seed: int
) -> ClientData:
    """The owner's rows as training and test arrays, by ``schema`` (see :func:`load_owner_table`).

    Raises:
        ConfigError: as :func:`load_owner_table`.
    """
    return load_owner_table(path, schema, num_classes=num_classes, seed=seed).data


def load_owner_table(
    path: Path,
    schema: SchemaSection,
    *,
    num_classes: int,
    seed: int,
    withdrawn: WithdrawnMask | None = None,
    deidentify: Deidentifier | None = None,
) -> OwnerTable:
    """The owner's rows as training and test arrays, by ``schema``, de-identified first.

    Order: read the schema's columns (and those the policy's de-identification needs); drop
    withdrawn rows (matched on the ids as in the file); drop direct identifiers, check
    k-anonymity and pseudonymize (:class:`fl_core.client.deidentify.Deidentifier`); then
    convert and split. No task, trainer or job code sees the table before that.

    Args:
        path: a ``.csv`` (header row), ``.parquet`` or ``.npz`` file.
        schema: the columns and dtypes to read.
        num_classes: the job's ``model.num_classes`` (1: regression); labels are checked
            against it.
        seed: shuffles the rows before ``schema.test_fraction`` of them are held out (the job's
            ``data.seed``, so the split is reproducible).
        withdrawn: marks withdrawn record ids (needs ``schema.id_column``).
        deidentify: the owner's de-identification rules.

    Raises:
        ConfigError: an unknown file type, a missing or non-numeric column, a null, a
            non-finite feature or a label out of range; the message names the column and row.
        PolicyRefused: the schema reads an identifier column, or the table is below the
            policy's k-anonymity.
    """
    if path.suffix not in TABLE_SUFFIXES:
        raise ConfigError(f"{path}: --data reads {list(TABLE_SUFFIXES)} files, not {path.suffix!r}")
    if withdrawn is not None and not schema.id_column:
        raise ConfigError(
            f"{path}: records were withdrawn from this data set, but the schema names no "
            "id_column to exclude them by"
        )
    deid = deidentify if deidentify is not None and deidentify.active else None
    if deid is not None:
        deid.check_used((*schema.features, schema.label), where="the job's [schema]")
    id_column = (schema.id_column,) if schema.id_column else ()
    extra = deid.reads() if deid is not None else ()
    names = list(dict.fromkeys([*schema.features, schema.label, *id_column, *extra]))
    text = tuple(dict.fromkeys([*id_column, *extra]))
    optional = tuple(c for c in deid.drop_columns if c not in names) if deid is not None else ()
    if path.suffix == ".npz":
        columns = _columns_npz(path, names, optional)
    else:
        columns = _columns_pyarrow(path, names, text=text, optional=optional)
    raw = record_ids(path, schema.id_column, columns[schema.id_column]) if id_column else None
    excluded = 0
    if withdrawn is not None and raw is not None:
        keep = ~withdrawn(raw)
        excluded = int((~keep).sum())
        columns = {k: v[keep] for k, v in columns.items()}
        raw = raw[keep]
    report = None
    if deid is not None:
        columns, report = deid.apply(columns)
    ids: npt.NDArray[np.str_] | None = raw
    if raw is not None and deid is not None and schema.id_column in deid.pseudonymize_columns:
        ids = np.asarray(columns[schema.id_column], dtype=np.str_)
    elif deid is not None and schema.id_column in deid.drop_columns:
        ids = None  # a direct identifier: only the owner's own code keeps it (raw_ids)
    x = np.column_stack(
        [_convert(path, n, columns[n], schema.feature_dtype) for n in schema.features]
    )
    finite = np.isfinite(x)
    if not finite.all():
        row, col = (int(v) for v in np.argwhere(~finite)[0])
        raise ConfigError(
            f"{path}: feature {schema.features[col]!r} is {x[row, col].item()!r} in data row "
            f"{row + 1}"
        )
    y = _convert(path, schema.label, columns[schema.label], schema.label_dtype)
    if num_classes > 1:
        bad = (y < 0) | (y >= num_classes)
        if bad.any():
            row = int(np.argmax(bad))
            raise ConfigError(
                f"{path}: label {schema.label!r} is {y[row].item()!r} in data row {row + 1}; the "
                f"job's model has classes 0 .. {num_classes - 1}"
            )
    elif not np.isfinite(y).all():
        row = int(np.argmin(np.isfinite(y)))
        raise ConfigError(
            f"{path}: label {schema.label!r} is {y[row].item()!r} in data row {row + 1}"
        )
    n = len(y)
    n_test = int(round(schema.test_fraction * n))
    if n - n_test < 1:
        raise ConfigError(f"{path}: {n} rows leave none to train on")
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    data = ClientData(
        x_train=x[train].astype(np.float32),
        y_train=y[train],
        x_test=x[test].astype(np.float32),
        y_test=y[test],
        ids_train=None if ids is None else ids[train],
        ids_test=None if ids is None else ids[test],
    )
    raw_ids = () if raw is None else (*raw[train].tolist(), *raw[test].tolist())
    return OwnerTable(data=data, raw_ids=raw_ids, excluded=excluded, deidentified=report)


MAX_ID_LENGTH = 256
"""The longest record id accepted (the ledger's limit on names)."""


def record_ids(path: Path, name: str, values: npt.NDArray[Any]) -> npt.NDArray[np.str_]:
    """The id column as distinct, non-empty strings of at most :data:`MAX_ID_LENGTH` characters.

    Raises:
        ConfigError: an empty, too long or repeated id (the message names the data row).
    """
    if values.dtype.kind not in "iuUSO":
        raise ConfigError(
            f"{path}: id column {name!r} has dtype {values.dtype}; ids are text or integers"
        )
    ids = np.array([str(v) for v in values.tolist()], dtype=np.str_)
    seen: dict[str, int] = {}
    for row, value in enumerate(ids.tolist()):
        if not value or len(value) > MAX_ID_LENGTH:
            raise ConfigError(
                f"{path}: id column {name!r} in data row {row + 1} is empty or longer than "
                f"{MAX_ID_LENGTH} characters"
            )
        if value in seen:
            raise ConfigError(
                f"{path}: id column {name!r} repeats id {value!r} in data rows "
                f"{seen[value] + 1} and {row + 1}"
            )
        seen[value] = row
    return ids
