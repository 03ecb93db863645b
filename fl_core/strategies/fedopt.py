"""Adaptive server optimizers: FedAdagrad, FedAdam, FedYogi.

Reddi, Charles, Zaheer, Garrett, Rush, Konecny, Kumar, McMahan, "Adaptive Federated
Optimization", ICLR 2021, Algorithm 2. With the pseudo-gradient ``Delta_t`` (the mean client
update, new local minus global):

1. ``m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t``
2. FedAdagrad: ``v_t = v_{t-1} + Delta_t^2``
   FedAdam:    ``v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t^2``
   FedYogi:    ``v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)``
3. ``x_{t+1} = x_t + eta * m_t / (sqrt(v_t) + tau)``

As in the paper's Algorithm 2 there is no bias correction; ``v_0 = tau^2`` (the paper initialises
``v_{-1} >= tau^2``). Moments are kept in float64 and checkpointed with every round.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .base import FloatVector, Strategy


class _FedOpt(Strategy):
    def __init__(
        self,
        *,
        server_learning_rate: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        self.eta = server_learning_rate
        self.beta1 = beta1
        self.beta2 = beta2
        self.tau = tau
        self._m: npt.NDArray[np.float64] | None = None
        self._v: npt.NDArray[np.float64] | None = None

    def _second_moment(
        self, v: npt.NDArray[np.float64], delta_sq: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        raise NotImplementedError

    def apply(self, global_weights: FloatVector, mean_update: FloatVector) -> FloatVector:
        """One server optimizer step (Algorithm 2, steps 1-3)."""
        delta = mean_update.astype(np.float64)
        if self._m is None or self._v is None:
            self._m = np.zeros_like(delta)
            self._v = np.full_like(delta, self.tau**2)
        self._m = self.beta1 * self._m + (1.0 - self.beta1) * delta
        self._v = self._second_moment(self._v, delta * delta)
        step = self.eta * self._m / (np.sqrt(self._v) + self.tau)
        return (global_weights.astype(np.float64) + step).astype(np.float32)

    def state(self) -> dict[str, npt.NDArray[np.float64 | np.float32]]:
        """The moments ``m`` and ``v`` (absent before the first step)."""
        if self._m is None or self._v is None:
            return {}
        return {"m": self._m, "v": self._v}

    def load_state(self, state: dict[str, npt.NDArray[np.float64 | np.float32]]) -> None:
        """Restore the moments."""
        if not state:
            self._m = self._v = None
            return
        if set(state) != {"m", "v"}:
            raise ValueError(f"{self.name} state needs arrays 'm' and 'v', got {sorted(state)}")
        self._m = np.asarray(state["m"], dtype=np.float64).copy()
        self._v = np.asarray(state["v"], dtype=np.float64).copy()


class FedAdagrad(_FedOpt):
    """``v_t = v_{t-1} + Delta_t^2``."""

    name = "fedadagrad"

    def _second_moment(
        self, v: npt.NDArray[np.float64], delta_sq: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        return v + delta_sq


class FedAdam(_FedOpt):
    """``v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t^2``."""

    name = "fedadam"

    def _second_moment(
        self, v: npt.NDArray[np.float64], delta_sq: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        return self.beta2 * v + (1.0 - self.beta2) * delta_sq


class FedYogi(_FedOpt):
    """``v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)``."""

    name = "fedyogi"

    def _second_moment(
        self, v: npt.NDArray[np.float64], delta_sq: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        return v - (1.0 - self.beta2) * delta_sq * np.sign(v - delta_sq)
