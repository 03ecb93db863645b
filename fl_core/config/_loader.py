"""The one TOML loader: a job file's text to a validated :class:`JobConfig`."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._common import _require
from .code import CodeSection, SchemaSection
from .protection import NO_MODEL, DPSection, HESection, SecAggSection, StatsSection
from .training import (
    AggregationSection,
    DataSection,
    EvaluationSection,
    JobSection,
    Limits,
    ModelSection,
    RoundSection,
    SamplingSection,
    StrategySection,
    TrainSection,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobConfig:
    """A whole job, as read from its TOML file."""

    job: JobSection
    data: DataSection
    model: ModelSection
    train: TrainSection = field(default_factory=TrainSection)
    strategy: StrategySection = field(default_factory=StrategySection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    round: RoundSection = field(default_factory=RoundSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    aggregation: AggregationSection = field(default_factory=AggregationSection)
    secagg: SecAggSection = field(default_factory=SecAggSection)
    limits: Limits = field(default_factory=Limits)
    he: HESection = field(default_factory=HESection)
    dp: DPSection = field(default_factory=DPSection)
    stats: StatsSection | None = None
    code: CodeSection | None = None
    schema: SchemaSection | None = None
    source: str = field(default="", repr=False, compare=False)

    @property
    def sha256(self) -> str:
        """SHA-256 of the job file's text: what an owner agrees to."""
        return hashlib.sha256(self.source.encode()).hexdigest()


_SECTIONS: dict[str, type[Any]] = {
    "job": JobSection,
    "data": DataSection,
    "model": ModelSection,
    "train": TrainSection,
    "strategy": StrategySection,
    "sampling": SamplingSection,
    "round": RoundSection,
    "evaluation": EvaluationSection,
    "aggregation": AggregationSection,
    "secagg": SecAggSection,
    "limits": Limits,
    "he": HESection,
    "dp": DPSection,
    "code": CodeSection,
    "schema": SchemaSection,
}
_REQUIRED = ("job", "data", "model")


def _check_type(where: str, value: object, annotation: object) -> object:
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        if item is str:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where} = {value!r} must be a list of strings")
            return tuple(value)
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{where} = {value!r} must be a list of integers")
        return tuple(value)
    hints = (
        typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    )
    for hint in hints:
        if hint is type(None) and value is None:
            return value
        if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if hint is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if hint in (str, bool) and type(value) is hint:
            return value
    names = " or ".join(getattr(h, "__name__", str(h)) for h in hints)
    raise ConfigError(f"{where} = {value!r} has type {type(value).__name__}; expected {names}")


def _build(section: str, cls: type[Any], table: object) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, object] = {}
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{section}.{key} is not a known field; allowed fields: {allowed}")
        kwargs[key] = _check_type(f"{section}.{key}", value, hints[key])
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in kwargs
    ]
    if missing:
        raise ConfigError(f"{section}.{missing[0]} is required")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        raise ConfigError(f"[{section}]: {exc}") from exc


def parse_job(text: str) -> JobConfig:
    """Parse a job file's text into a :class:`JobConfig`.

    Raises:
        ConfigError: naming the table or field that is wrong and what is allowed.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"job file is not valid TOML: {exc}") from exc
    sections = dict(_SECTIONS)
    for name in raw:
        if name not in sections and name != "stats":
            allowed = [*sections, "stats"]
            raise ConfigError(f"[{name}] is not a known table; allowed tables: {allowed}")
    stats_job = isinstance(raw.get("job"), dict) and raw["job"].get("kind") == "stats"
    for name in ("job", "data", "stats") if stats_job else _REQUIRED:
        if name not in raw:
            raise ConfigError(f"[{name}] is required" + (" for job.kind = 'stats'" * stats_job))
    built = {name: _build(name, sections[name], raw[name]) for name in raw if name != "stats"}
    if "stats" in raw:
        if not stats_job:
            raise ConfigError("[stats] is only allowed with job.kind = 'stats'")
        built["stats"] = StatsSection.from_table(raw["stats"])
    if stats_job:
        _require(
            built["job"].rounds == 1 or "rounds" not in raw["job"],
            "job.rounds",
            "1 for a statistics job (it computes its result once)",
            built["job"].rounds,
        )
        built["job"] = dataclasses.replace(built["job"], rounds=1)
        built.setdefault("model", ModelSection(name=NO_MODEL))
    job = JobConfig(**built, source=text)
    _check_dp(job)
    _check_code(job)
    return job


def _check_code(job: JobConfig) -> None:
    """Rules that span tables: a model named by code or by registry, and a table's shape."""
    if job.job.kind == "stats":
        return
    code_model = job.code.model if job.code is not None else ""
    if not job.model.name and not code_model:
        raise ConfigError("model.name is required (or code.model, for the owners' own model)")
    if job.model.name and code_model:
        raise ConfigError(
            f"model.name = {job.model.name!r} and code.model = {code_model!r}: give one of them"
        )
    if job.code is not None or job.schema is not None:
        _require(
            bool(job.model.input_shape) and job.model.num_classes > 0,
            "model.input_shape",
            "set, with model.num_classes, in a job with [code] or [schema] (the coordinator "
            "builds the model without data)",
            list(job.model.input_shape),
        )
    if job.schema is not None:
        width = (len(job.schema.features),)
        _require(
            job.model.input_shape == width,
            "model.input_shape",
            f"[{width[0]}]: one value per schema.features column",
            list(job.model.input_shape),
        )
        regression = job.model.num_classes == 1
        expected = "float32" if regression else "int64"
        _require(
            job.schema.label_dtype == expected,
            "schema.label_dtype",
            f"{expected!r} for model.num_classes = {job.model.num_classes}",
            job.schema.label_dtype,
        )


def load_schema(path: str | Path) -> SchemaSection:
    """Read a schema file: a TOML file with one ``[schema]`` table (as in a job file).

    Raises:
        ConfigError: the file cannot be read, or its ``[schema]`` is missing or wrong.
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read schema file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"schema file {path} is not valid TOML: {exc}") from exc
    extra = [k for k in raw if k != "schema"]
    if "schema" not in raw or extra:
        raise ConfigError(f"schema file {path} must hold exactly one [schema] table")
    schema: SchemaSection = _build("schema", SchemaSection, raw["schema"])
    return schema


def expected_cohort(job: JobConfig) -> int:
    """Clients expected per round: the sampled fraction of the federation, at least the minimum."""
    n = job.data.num_clients
    fraction = job.sampling.fraction
    if job.sampling.poisson:
        return max(1, round(fraction * n))
    return min(n, max(job.sampling.min_clients, int(math.floor(fraction * n + 0.5))))


def dp_survivor_floor(job: JobConfig) -> int:
    """The fewest contributions a DP round accepts: what its noise is calibrated for.

    ``dp.min_clients`` when set, else the quorum of the expected cohort. A secure-aggregation
    round whose sum would hold fewer aborts, so no round spends more than the owners charged.
    """
    return job.dp.min_clients or max(1, math.ceil(job.round.quorum_fraction * expected_cohort(job)))


def _check_dp(job: JobConfig) -> None:
    """Rules that span tables: what each DP mode needs from the rest of the job."""
    mode = job.dp.mode
    if mode == "none":
        return
    kind = job.aggregation.kind
    if mode in ("distributed", "fedsgd"):
        _require(kind == "secagg", "aggregation.kind", f"'secagg' for dp.mode = {mode!r}", kind)
    if mode == "central":
        _require(
            kind in ("mean", "secagg"),
            "aggregation.kind",
            "'mean' or 'secagg' for dp.mode = 'central'",
            kind,
        )
    floor = dp_survivor_floor(job)
    _require(
        job.dp.colluders < floor,
        "dp.colluders",
        f"fewer than the {floor} clients the noise is calibrated for",
        job.dp.colluders,
    )
    if mode == "fedsgd":
        _require(
            job.train.epochs == 1,
            "train.epochs",
            "1 for dp.mode = 'fedsgd' (a round is one step)",
            job.train.epochs,
        )


def load_job(path: str | Path) -> JobConfig:
    """Read and parse a job file.

    Raises:
        ConfigError: when the file cannot be read or is not a valid job.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read job file {path}: {exc.strerror}") from exc
    return parse_job(text)


def with_deployment_defaults(job: JobConfig) -> JobConfig:
    """The job as a deployment with a roster runs it: ``secagg.adversary`` unset means malicious.

    Coordinator and owners that both run with ``--federation`` apply this to the same pinned
    file, so they compute the same parameters; a job file that sets ``secagg.adversary`` keeps
    its choice. The file's hash (what owners agree to) is unchanged.
    """
    try:
        table = tomllib.loads(job.source).get("secagg", {})
    except tomllib.TOMLDecodeError:
        return job
    if "adversary" in table:
        return job
    return dataclasses.replace(job, secagg=dataclasses.replace(job.secagg, adversary="malicious"))
