"""Job configuration: frozen, validated dataclasses and the one TOML loader.

A job file (TOML) has one table per section below. Every field has a default except where noted;
an unknown table or field, a wrong type, or a value out of range raises
:class:`~fl_core.errors.ConfigError` naming ``section.field`` and what is allowed. The coordinator
and every data owner load the same file; its SHA-256 is what an owner agrees to when it joins.
"""

from ._common import (
    AGGREGATIONS,
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_ROUNDS,
    DEFAULT_STAGE_TIMEOUT_S,
    JOB_KINDS,
    OPTIMIZERS,
    PARTITIONS,
    STRATEGIES,
)
from ._diff import (
    describe_differences,
    describe_digest_differences,
    field_digests,
    job_differences,
)
from ._loader import (
    JobConfig,
    dp_survivor_floor,
    expected_cohort,
    load_job,
    load_schema,
    parse_job,
    with_deployment_defaults,
)
from .code import CodeSection, SchemaSection
from .protection import (
    DP_MODES,
    HE_BFV_PRESETS,
    HE_CKKS_PRESETS,
    NO_MODEL,
    DPSection,
    HESection,
    SecAggSection,
    StatsSection,
)
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

__all__ = [
    "describe_differences",
    "describe_digest_differences",
    "field_digests",
    "dp_survivor_floor",
    "expected_cohort",
    "AGGREGATIONS",
    "AggregationSection",
    "CodeSection",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_ROUNDS",
    "DEFAULT_STAGE_TIMEOUT_S",
    "DPSection",
    "DP_MODES",
    "DataSection",
    "EvaluationSection",
    "HESection",
    "HE_BFV_PRESETS",
    "HE_CKKS_PRESETS",
    "JOB_KINDS",
    "JobConfig",
    "JobSection",
    "Limits",
    "ModelSection",
    "NO_MODEL",
    "OPTIMIZERS",
    "PARTITIONS",
    "RoundSection",
    "STRATEGIES",
    "SamplingSection",
    "SchemaSection",
    "SecAggSection",
    "StatsSection",
    "StrategySection",
    "TrainSection",
    "job_differences",
    "load_job",
    "load_schema",
    "parse_job",
    "with_deployment_defaults",
]
