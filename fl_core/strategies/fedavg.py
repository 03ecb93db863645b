"""FedAvg and FedProx (server side).

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017: the new global model is the example-weighted mean of the clients' models, i.e. the
global model plus the weighted mean update (times a server learning rate, 1 by default).
FedProx (Li et al., MLSys 2020) changes only local training: each client adds
``mu/2 * ||w - w_global||^2`` to its loss; the server rule is FedAvg's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .base import FloatVector, Strategy


class FedAvg(Strategy):
    """``w <- w + eta * mean_update`` with ``eta = server_learning_rate`` (1 is plain FedAvg)."""

    name = "fedavg"

    def __init__(self, *, server_learning_rate: float = 1.0) -> None:
        self.server_learning_rate = server_learning_rate

    def apply(self, global_weights: FloatVector, mean_update: FloatVector) -> FloatVector:
        """Step along the mean update."""
        if self.server_learning_rate == 1.0:
            return (global_weights + mean_update).astype(np.float32)
        step = np.float32(self.server_learning_rate) * mean_update
        return (global_weights + step).astype(np.float32)


class FedProx(FedAvg):
    """FedAvg on the server; clients train with the proximal term ``mu``."""

    name = "fedprox"

    def __init__(self, *, proximal_mu: float, server_learning_rate: float = 1.0) -> None:
        super().__init__(server_learning_rate=server_learning_rate)
        if proximal_mu <= 0:
            raise ValueError(f"proximal_mu must be > 0 for FedProx, got {proximal_mu}")
        self.proximal_mu = proximal_mu

    def client_config(self) -> dict[str, float]:
        """Clients need mu for their proximal term."""
        return {"proximal_mu": self.proximal_mu}


class FedAvgM(FedAvg):
    """FedAvg with server momentum (Hsu, Qi, Brown, arXiv 1909.06335, 2019).

    ``v <- beta * v + mean_update``; ``w <- w + eta * v``. With a DP-FedSGD aggregate (the
    negative noisy mean gradient) this is SGD with momentum on the union of the clients' batches.
    The velocity is checkpointed with every round.
    """

    name = "fedavgm"

    def __init__(self, *, server_learning_rate: float = 1.0, server_momentum: float = 0.9) -> None:
        super().__init__(server_learning_rate=server_learning_rate)
        if not 0 <= server_momentum < 1:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum}")
        self.server_momentum = server_momentum
        self._velocity: npt.NDArray[np.float64] | None = None

    def apply(self, global_weights: FloatVector, mean_update: FloatVector) -> FloatVector:
        """One momentum step along the mean update."""
        update = mean_update.astype(np.float64)
        if self._velocity is None:
            self._velocity = np.zeros_like(update)
        self._velocity = self.server_momentum * self._velocity + update
        step = self.server_learning_rate * self._velocity
        return (global_weights.astype(np.float64) + step).astype(np.float32)

    def state(self) -> dict[str, npt.NDArray[np.float64 | np.float32]]:
        """The velocity (absent before the first step)."""
        return {} if self._velocity is None else {"velocity": self._velocity}

    def load_state(self, state: dict[str, npt.NDArray[np.float64 | np.float32]]) -> None:
        """Restore the velocity."""
        if not state:
            self._velocity = None
            return
        if set(state) != {"velocity"}:
            raise ValueError(f"fedavgm state needs the array 'velocity', got {sorted(state)}")
        self._velocity = np.asarray(state["velocity"], dtype=np.float64).copy()
