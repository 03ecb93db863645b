"""Strategy: how the coordinator turns a round's aggregate update into the next global model.

Strategies work on flat float32 vectors (see :class:`fl_core.types.Layout`). Their state (server
optimizer moments) is a dict of arrays that the coordinator checkpoints with every round, so a
restarted coordinator continues exactly where the last completed round left off.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import numpy.typing as npt

FloatVector = npt.NDArray[np.float32]


class Strategy(ABC):
    """Server-side update rule. One instance lives for a whole job."""

    name: str = "strategy"

    @abstractmethod
    def apply(self, global_weights: FloatVector, mean_update: FloatVector) -> FloatVector:
        """Return the next global weights.

        Args:
            global_weights: this round's global model, flat.
            mean_update: the (weighted) mean of the clients' updates, new local minus global.
        """

    def state(self) -> dict[str, npt.NDArray[np.float64 | np.float32]]:
        """Arrays to checkpoint with the round (empty for stateless strategies)."""
        return {}

    def load_state(self, state: dict[str, npt.NDArray[np.float64 | np.float32]]) -> None:
        """Restore what :meth:`state` returned."""
        if state:
            raise ValueError(f"{self.name} keeps no state, got {sorted(state)}")

    def client_config(self) -> dict[str, float]:
        """Extra settings this strategy needs in each client's local training (FedProx's mu)."""
        return {}
