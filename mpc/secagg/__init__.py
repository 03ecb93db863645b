"""SecAgg (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020): state machines and messages."""

from mpc.secagg.client import SecAggClient
from mpc.secagg.messages import (
    AdvertiseKeysRequest,
    AdvertiseKeysResponse,
    ConsistencyCheckRequest,
    ConsistencyCheckResponse,
    MaskedInputRequest,
    MaskedInputResponse,
    SessionInfo,
    ShareKeysRequest,
    ShareKeysResponse,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
)
from mpc.secagg.params import Adversary, SecAggParams, find_parameters
from mpc.secagg.server import SecAggResult, SecAggServer

__all__ = [
    "Adversary",
    "AdvertiseKeysRequest",
    "AdvertiseKeysResponse",
    "ConsistencyCheckRequest",
    "ConsistencyCheckResponse",
    "MaskedInputRequest",
    "MaskedInputResponse",
    "SecAggClient",
    "SecAggParams",
    "SecAggResult",
    "SecAggServer",
    "SessionInfo",
    "ShareKeysRequest",
    "ShareKeysResponse",
    "Stage",
    "UnmaskRequest",
    "UnmaskResponse",
    "find_parameters",
]
