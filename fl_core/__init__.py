"""Bulwark core: jobs, rounds, transports, clients, strategies, aggregators and the CLI.

Light names are imported here; the ones that need torch (``simulate``, ``TorchTrainer``,
``create_model``, ``load_dataset``) are resolved on first use, so ``import fl_core`` stays cheap
for a coordinator that never trains.
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

from .aggregators import (
    AggregateUpdate,
    Aggregator,
    ClientRound,
    MeanAggregator,
    RoundContext,
    SecureSumAggregator,
    ServerRound,
    create_aggregator,
)
from .client.policy import OwnerPolicy
from .client.runtime import Client, ClientOptions, Participant
from .config import JobConfig, Limits, load_job, parse_job
from .coordinator.events import Event
from .coordinator.service import Coordinator
from .coordinator.store import Store
from .errors import (
    BudgetExceeded,
    CodecError,
    ConfigError,
    DuplicateResult,
    FlCoreError,
    PayloadTooLarge,
    PolicyRefused,
    ProtocolError,
    RoundAborted,
    StaleResult,
    StoreError,
    TransportError,
    TransportTimeout,
    TransportUnavailable,
    UnknownClient,
)
from .payload import Payload
from .strategies import FedAdagrad, FedAdam, FedAvg, FedProx, FedYogi, Strategy, create_strategy
from .transport import InMemoryTransport
from .types import EvaluateResult, FitConfig, FitResult, Layout, Trainer, Weights

_LAZY = {
    "simulate": ("fl_core.simulation", "simulate"),
    "SimulationResult": ("fl_core.simulation", "SimulationResult"),
    "TorchTrainer": ("fl_core.client.trainer", "TorchTrainer"),
    "create_model": ("fl_core.models", "create_model"),
    "load_dataset": ("fl_core.data", "load_dataset"),
    "GrpcClientTransport": ("fl_core.transport.grpc_client", "GrpcClientTransport"),
    "serve": ("fl_core.transport.grpc_server", "serve"),
}

__all__ = [
    "AggregateUpdate",
    "Aggregator",
    "BudgetExceeded",
    "Client",
    "ClientOptions",
    "ClientRound",
    "CodecError",
    "ConfigError",
    "Coordinator",
    "DuplicateResult",
    "EvaluateResult",
    "Event",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FedYogi",
    "FitConfig",
    "FitResult",
    "FlCoreError",
    "GrpcClientTransport",
    "InMemoryTransport",
    "JobConfig",
    "Layout",
    "Limits",
    "MeanAggregator",
    "OwnerPolicy",
    "Participant",
    "Payload",
    "PayloadTooLarge",
    "PolicyRefused",
    "ProtocolError",
    "RoundAborted",
    "RoundContext",
    "SecureSumAggregator",
    "ServerRound",
    "SimulationResult",
    "StaleResult",
    "Store",
    "StoreError",
    "Strategy",
    "TorchTrainer",
    "Trainer",
    "TransportError",
    "TransportTimeout",
    "TransportUnavailable",
    "UnknownClient",
    "Weights",
    "create_aggregator",
    "create_model",
    "create_strategy",
    "load_dataset",
    "load_job",
    "parse_job",
    "serve",
    "simulate",
]


def __getattr__(name: str) -> _Any:
    """Resolve the torch-dependent names on first use."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(_importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fl_core' has no attribute {name!r}")
