"""Server-side strategies: FedAvg, FedProx, FedAdagrad, FedAdam, FedYogi."""

from __future__ import annotations

from ..config import StrategySection
from .base import Strategy
from .fedavg import FedAvg, FedAvgM, FedProx
from .fedopt import FedAdagrad, FedAdam, FedYogi

__all__ = [
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Strategy",
    "create_strategy",
]


def create_strategy(section: StrategySection) -> Strategy:
    """Build the strategy a job's ``[strategy]`` table names."""
    if section.name == "fedavg":
        return FedAvg(server_learning_rate=section.server_learning_rate)
    if section.name == "fedavgm":
        return FedAvgM(
            server_learning_rate=section.server_learning_rate,
            server_momentum=section.server_momentum,
        )
    if section.name == "fedprox":
        return FedProx(
            proximal_mu=section.proximal_mu, server_learning_rate=section.server_learning_rate
        )
    cls = {"fedadam": FedAdam, "fedyogi": FedYogi, "fedadagrad": FedAdagrad}[section.name]
    return cls(
        server_learning_rate=section.server_learning_rate,
        beta1=section.beta1,
        beta2=section.beta2,
        tau=section.tau,
    )
