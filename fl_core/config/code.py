"""``[code]`` and ``[schema]``: the owner's own model and trainer code, and its table's columns.

``[code]`` pins the Python distribution that holds a job's model (and optionally its training
loop): its name, version and a SHA-256 over its installed files. Each party installs that
distribution itself and checks it against the pin before importing anything from it
(``fl_core/app.py``); the coordinator never sends code. ``[schema]`` declares which columns of an
owner's table (CSV, Parquet or ``.npz``) are the features and which is the label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._common import _require

CODE_REF = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
"""``package.module:object`` (an object path after the colon, as in entry points)."""

ENTRY_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")
"""An entry point's name (looked up in the pinned distribution's metadata)."""

DISTRIBUTION = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
"""A distribution name as PEP 508 allows it."""

FEATURE_DTYPES = ("float32", "float64")
LABEL_DTYPES = ("int64", "float32")


def _ref_ok(value: str) -> bool:
    return bool(CODE_REF.match(value) or ENTRY_NAME.match(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeSection:
    """``[code]``: the pinned distribution and the model and trainer it provides.

    ``model`` and ``trainer`` are either ``"package.module:object"`` inside the distribution, or
    the name of an entry point of the distribution in group ``bulwark.models`` /
    ``bulwark.trainers``. The model object is called like a built-in model factory,
    ``model(input_shape=..., num_classes=...)``; the trainer object like
    :meth:`fl_core.client.trainer.TorchTrainer.from_client_data`,
    ``trainer(model_fn, data, task=..., seed=...)``.
    """

    distribution: str
    version: str
    sha256: str
    model: str = ""
    trainer: str = ""

    def __post_init__(self) -> None:
        _require(
            bool(DISTRIBUTION.match(self.distribution)),
            "code.distribution",
            "a distribution name (letters, digits, '.', '_', '-')",
            self.distribution,
        )
        _require(bool(self.version), "code.version", "the version the owners installed", "")
        _require(
            bool(re.fullmatch(r"[0-9a-f]{64}", self.sha256)),
            "code.sha256",
            "64 lowercase hex digits (print them with `bulwark code-hash DISTRIBUTION`)",
            self.sha256,
        )
        _require(
            bool(self.model or self.trainer),
            "code.model",
            "a model (or a trainer) from the distribution",
            self.model,
        )
        for where, value in (("code.model", self.model), ("code.trainer", self.trainer)):
            _require(
                not value or _ref_ok(value),
                where,
                "'package.module:object' or an entry point name",
                value,
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaSection:
    """``[schema]``: the columns of an owner's table that a training job reads.

    Every owner's ``--data`` file must have these columns (extra columns are ignored, never
    read into the model). Features become one ``feature_dtype`` vector per row; the label is
    ``int64`` (classes ``0 .. model.num_classes - 1``) or ``float32`` (regression).
    ``test_fraction`` of the rows, chosen with ``data.seed``, are held out for evaluation.
    ``id_column`` (optional) names the column of record ids: read as text, never into the model,
    kept beside the arrays so that withdrawn records (``bulwark data withdraw``) are excluded.
    """

    features: tuple[str, ...]
    label: str
    feature_dtype: str = "float32"
    label_dtype: str = "int64"
    test_fraction: float = 0.2
    id_column: str = ""

    def __post_init__(self) -> None:
        _require(
            bool(self.features)
            and all(self.features)
            and len(set(self.features)) == len(self.features),
            "schema.features",
            "a non-empty list of distinct column names",
            list(self.features),
        )
        _require(
            bool(self.label) and self.label not in self.features,
            "schema.label",
            "a column name that is not a feature",
            self.label,
        )
        _require(
            self.id_column not in (*self.features, self.label),
            "schema.id_column",
            "a column that is neither a feature nor the label",
            self.id_column,
        )
        _require(
            self.feature_dtype in FEATURE_DTYPES,
            "schema.feature_dtype",
            f"one of {list(FEATURE_DTYPES)}",
            self.feature_dtype,
        )
        _require(
            self.label_dtype in LABEL_DTYPES,
            "schema.label_dtype",
            f"one of {list(LABEL_DTYPES)}",
            self.label_dtype,
        )
        _require(
            0.0 <= self.test_fraction < 1.0,
            "schema.test_fraction",
            "a number in [0, 1)",
            self.test_fraction,
        )
