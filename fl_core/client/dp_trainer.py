"""Local DP-SGD as a :class:`~fl_core.types.Trainer`: an owner's model trained with Opacus.

:class:`DPSGDTrainer` keeps one :class:`fl_core.dp.dpsgd.DPSGDSession` for the whole job: every
round loads the global weights, runs ``epochs`` of Poisson-sampled DP-SGD on the owner's data,
and returns the new weights. The noise is calibrated once, for ``planned_rounds`` rounds at the
job's target epsilon, from the owner's own sampling rate (``batch_size / n``); the owner's runtime
charges :meth:`next_round_event` to its ledger before the round starts, so a round that would
overspend the cap never trains. Evaluation uses the plain trainer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..config import DPSection, TrainSection
from ..dp.accounting import GaussianEvent
from ..dp.dpsgd import ClippingMode, DPSGDConfig, DPSGDSession
from ..types import EvaluateResult, FitConfig, FitResult, Weights
from .trainer import TorchTrainer


class _RegressionLoss(nn.Module):
    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(out[:, 0], y)


class DPSGDTrainer:
    """An owner's trainer with example-level DP-SGD (Opacus, Poisson sampling).

    Args:
        base: the owner's plain trainer (its data, its model factory's initial weights).
        model: a fresh model of the job's architecture, trained in place by the session.
        dp: the job's ``[dp]`` table (``clip``, ``epsilon`` or ``noise_multiplier``, ...).
        train: the job's ``[train]`` table (batch size, learning rate, momentum, epochs).
        planned_rounds: rounds the owner may take part in (the calibration horizon).
    """

    def __init__(
        self,
        base: TorchTrainer,
        *,
        model: nn.Module,
        dp: DPSection,
        train: TrainSection,
        planned_rounds: int,
    ) -> None:
        self._base = base
        x, y = base.train_tensors
        loader = DataLoader(TensorDataset(x, y), batch_size=train.batch_size)
        if train.optimizer == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(
                model.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay
            )
        else:
            optimizer = torch.optim.SGD(
                model.parameters(),
                lr=train.learning_rate,
                momentum=train.momentum,
                weight_decay=train.weight_decay,
            )
        criterion = nn.CrossEntropyLoss() if base.task == "classification" else _RegressionLoss()
        self.session = DPSGDSession(
            model=model,
            optimizer=optimizer,
            data_loader=loader,
            criterion=criterion,
            config=DPSGDConfig(
                max_grad_norm=dp.clip,
                delta=dp.delta,
                noise_multiplier=dp.noise_multiplier or None,
                target_epsilon=dp.epsilon or None,
                planned_rounds=planned_rounds,
                epochs_per_round=train.epochs,
                max_steps_per_round=train.max_steps,
                clipping=ClippingMode(dp.clipping),
                secure_mode=dp.secure_mode,
                calibration_accountant="pld" if dp.accountant == "pld" else "rdp",
            ),
        )

    @property
    def noise_multiplier(self) -> float:
        """The calibrated (or given) noise multiplier."""
        return self.session.noise_multiplier

    def initial_weights(self) -> Weights:
        """The job's initial weights."""
        return self._base.initial_weights()

    def next_round_event(self) -> GaussianEvent:
        """The most the next round can spend (charged to the ledger before it trains)."""
        return self.session.next_round_event()

    def fit(self, weights: Weights, config: FitConfig) -> FitResult:
        """One round of local DP-SGD from ``weights``."""
        self.session.load_weights(weights)
        report = self.session.train_round()
        return FitResult(
            weights=self.session.weights(),
            num_examples=max(report.examples, 1),
            metrics={
                "loss": report.mean_loss,
                "dpsgd_epsilon": report.epsilon.epsilon,
                "noise_multiplier": self.session.noise_multiplier,
            },
        )

    def evaluate(self, weights: Weights) -> EvaluateResult:
        """Plain evaluation on the owner's test data."""
        return self._base.evaluate(weights)
