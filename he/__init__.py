"""he: homomorphic-encrypted statistics and model aggregation on TenSEAL, with a key holder.

Roles: owners encrypt (`encrypt_statistics`, `encrypt_vector`), the coordinator checks and
relays their contributions (`Aggregator`, `Aggregator.request`), the key holder assembles and
decrypts only sums of at least k owners' contributions (`KeyHolder`, `DecryptionRequest`), and
anyone finalizes a release (`finalize_statistics`). See README.md.
"""

from he._finalize import Histogram, OLSResult
from he._spec_dict import spec_from_dict
from he.aggregate import Aggregator, add_ciphertexts
from he.context import PublicContext
from he.envelope import EncryptedAggregate, Receipt
from he.errors import (
    BelowMinimumCohort,
    BindingError,
    ContextMismatch,
    DataError,
    DecodeError,
    DecryptionError,
    HeError,
    InsecureParameters,
    MissingSecretKey,
    NotAnAggregate,
    ParameterError,
    SpecError,
)
from he.keyholder import DecryptionRecord, KeyHolder, Refusal
from he.masking import Cohort, MaskAdvertisement, Masking, MaskingKey
from he.params import BFV_4096, BFV_8192, CKKS_8192, DEFAULT_STATS_PARAMS, HEParams, Scheme
from he.release import DPNoise, Release, flood_bits_for
from he.request import DecryptionRequest
from he.spec import (
    ColumnRange,
    DPSpec,
    HistogramSpec,
    OLSSpec,
    OutOfRange,
    Statistic,
    StatsSpec,
    VectorSpec,
)
from he.stats import (
    StatisticsResult,
    encrypt_statistics,
    finalize_statistics,
    sufficient_statistics,
)
from he.vector import encrypt_vector

__all__ = [
    "BFV_4096",
    "BFV_8192",
    "CKKS_8192",
    "DEFAULT_STATS_PARAMS",
    "Aggregator",
    "BelowMinimumCohort",
    "BindingError",
    "Cohort",
    "ColumnRange",
    "ContextMismatch",
    "DPNoise",
    "DPSpec",
    "DataError",
    "DecodeError",
    "DecryptionError",
    "DecryptionRecord",
    "DecryptionRequest",
    "EncryptedAggregate",
    "HEParams",
    "HeError",
    "Histogram",
    "HistogramSpec",
    "InsecureParameters",
    "KeyHolder",
    "MaskAdvertisement",
    "Masking",
    "MaskingKey",
    "MissingSecretKey",
    "NotAnAggregate",
    "OLSResult",
    "OLSSpec",
    "OutOfRange",
    "ParameterError",
    "PublicContext",
    "Receipt",
    "Refusal",
    "Release",
    "Scheme",
    "SpecError",
    "Statistic",
    "StatisticsResult",
    "StatsSpec",
    "VectorSpec",
    "add_ciphertexts",
    "encrypt_statistics",
    "encrypt_vector",
    "finalize_statistics",
    "flood_bits_for",
    "spec_from_dict",
    "sufficient_statistics",
]
