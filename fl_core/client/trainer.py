"""Local training of a torch model on a data owner's in-memory arrays: :class:`TorchTrainer`.

``TorchTrainer`` implements the :class:`fl_core.types.Trainer` protocol. Each ``fit`` loads the
round's global weights, trains for ``config.epochs`` epochs with a fresh SGD or Adam optimizer
(optionally with FedProx's proximal term), and returns copies of the new weights as float32 numpy
arrays, in ``state_dict`` order.

Determinism: the same trainer inputs (data, ``seed``) and the same ``fit``/``evaluate`` arguments
give bit-identical outputs in the same environment (torch build and thread count). The initial
weights come from torch's generator seeded with ``seed``; each round's data order and any dropout
come from a seed derived from ``(config.seed, config.round)``. Both run inside
:func:`torch.random.fork_rng`, so the caller's global torch RNG state is left as it was.

Speed: the arrays are converted to torch tensors once, at construction; batches are drawn by
indexing those tensors with a shuffled permutation (no ``DataLoader``, no per-example Python
calls); evaluation runs under :func:`torch.no_grad`. Global torch settings (threads, determinism
flags) are left alone.

Extension point for DP-SGD: a :class:`TrainingHook` receives the :class:`LocalTraining` plan of a
``fit`` call (model, optimizer, per-epoch batch sampler) and may replace any part of it, e.g. wrap
the model and optimizer with Opacus and sample batches with Poisson sampling; ``finish`` then
undoes what ``prepare`` attached and reports extra metrics. The trainer itself implements no DP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fl_core.data.datasets import TASKS
from fl_core.data.federated import ClientData
from fl_core.errors import ConfigError
from fl_core.types import EvaluateResult, FitConfig, FitResult, Metrics, Weights

__all__ = [
    "DEFAULT_EVAL_BATCH_SIZE",
    "OPTIMIZERS",
    "EpochSampler",
    "LocalTraining",
    "TorchTrainer",
    "TrainingHook",
    "shuffled_batches",
]

DEFAULT_EVAL_BATCH_SIZE = 1024
"""Examples per forward pass in :meth:`TorchTrainer.evaluate`."""

OPTIMIZERS = ("sgd", "adam")
"""The values of ``FitConfig.optimizer`` that :class:`TorchTrainer` understands."""

EpochSampler = Callable[[torch.Generator], Iterable[torch.Tensor]]
"""Yields the int64 index batches of one epoch, drawing randomness from the given generator."""


def shuffled_batches(num_examples: int, batch_size: int) -> EpochSampler:
    """Return a sampler of one shuffled pass over ``num_examples`` in batches of ``batch_size``.

    The last batch of an epoch holds the remainder (it is not dropped).
    """

    def sample(generator: torch.Generator) -> Iterable[torch.Tensor]:
        return torch.split(torch.randperm(num_examples, generator=generator), batch_size)

    return sample


@dataclass(slots=True, kw_only=True)
class LocalTraining:
    """What one ``fit`` call trains with; a :class:`TrainingHook` may replace any field.

    Attributes:
        model: the module that runs the forward pass. It must share its parameters with the
            trainer's model (wrappers such as Opacus' ``GradSampleModule`` do), because the
            weights are read back from the trainer's model.
        optimizer: the optimizer stepped after each batch.
        sampler: draws the index batches of each epoch.
        num_examples: the number of local training examples.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    sampler: EpochSampler
    num_examples: int


class TrainingHook(Protocol):
    """Changes how local training runs (the DP-SGD wrapper in ``fl_core.dp.dpsgd`` is one)."""

    def prepare(self, plan: LocalTraining, config: FitConfig) -> LocalTraining:
        """Return the plan to train with (called at the start of every ``fit``)."""
        ...

    def finish(self, plan: LocalTraining) -> Metrics:
        """Undo what ``prepare`` attached and return extra metrics (called even on error)."""
        ...


class TorchTrainer:
    """Trains a torch model on one data owner's local arrays.

    Args:
        model_fn: builds the model, e.g. ``lambda: create_model("cnn", ...)``. Called once, with
            torch's generator seeded by ``seed``.
        x_train: training features, shape ``(n, ...)``, float32 (other real dtypes are converted).
        y_train: training labels (integers) or targets (regression), shape ``(n,)``.
        x_test: evaluation features with the same example shape.
        y_test: evaluation labels or targets.
        task: ``"classification"`` (cross-entropy on logits) or ``"regression"`` (mean squared
            error on a single output).
        seed: seeds the initial weights.
        hook: optional :class:`TrainingHook` (e.g. DP-SGD).
        eval_batch_size: examples per forward pass during evaluation.

    Raises:
        ConfigError: an array has the wrong shape or dtype, non-finite values, or a split is
            empty; or an argument is out of range.
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        *,
        x_train: npt.NDArray[np.generic],
        y_train: npt.NDArray[np.generic],
        x_test: npt.NDArray[np.generic],
        y_test: npt.NDArray[np.generic],
        task: str = "classification",
        seed: int = 0,
        hook: TrainingHook | None = None,
        eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    ) -> None:
        if task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
        if eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self._task = task
        self._hook = hook
        self._eval_batch_size = eval_batch_size
        self._x_train, self._y_train = _to_tensors("train", x_train, y_train, task)
        self._x_test, self._y_test = _to_tensors("test", x_test, y_test, task)
        if self._x_train.shape[1:] != self._x_test.shape[1:]:
            raise ConfigError(
                f"x_train and x_test example shapes differ: {tuple(self._x_train.shape[1:])} vs "
                f"{tuple(self._x_test.shape[1:])}"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._model = model_fn()
        self._initial = _read_weights(self._model)

    @classmethod
    def from_client_data(
        cls,
        model_fn: Callable[[], nn.Module],
        data: ClientData,
        *,
        task: str = "classification",
        seed: int = 0,
        hook: TrainingHook | None = None,
    ) -> TorchTrainer:
        """Build a trainer on one client's share from :func:`fl_core.data.split_for_clients`."""
        return cls(
            model_fn,
            x_train=data.x_train,
            y_train=data.y_train,
            x_test=data.x_test,
            y_test=data.y_test,
            task=task,
            seed=seed,
            hook=hook,
        )

    @property
    def num_train(self) -> int:
        """Number of local training examples."""
        return int(self._x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of local evaluation examples."""
        return int(self._x_test.shape[0])

    @property
    def model(self) -> nn.Module:
        """The trainer's model (its parameters hold the weights of the last ``fit``)."""
        return self._model

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return self._task

    @property
    def train_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The local training examples and labels as torch tensors (for DP training)."""
        return self._x_train, self._y_train

    def clipped_gradient_sum(
        self, weights: Weights, *, clip: float, sample_rate: float, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.float64], int]:
        """DP-FedSGD's contribution: a sum of clipped per-example gradients at ``weights``.

        The examples are a Poisson sample (rate ``sample_rate``) of the local training data; each
        example's gradient is clipped to L2 norm ``clip``.

        Returns:
            The flat float64 sum (in ``state_dict`` order) and the number of sampled examples.
        """
        from ..dp.dpsgd import clipped_gradient_sum  # imports Opacus only for DP-FedSGD

        _load_weights(self._model, weights)
        self._model.train()
        result = clipped_gradient_sum(
            self._model,
            self._x_train,
            self._y_train,
            clip=clip,
            sample_rate=sample_rate,
            loss_fn=_SummedLoss(self._loss),
            rng=rng,
        )
        return result.vector, result.batch_size

    def initial_weights(self) -> Weights:
        """Return copies of the model's initial weights (seeded by the constructor's ``seed``)."""
        return {name: array.copy() for name, array in self._initial.items()}

    def fit(self, weights: Weights, config: FitConfig) -> FitResult:
        """Train locally from ``weights`` as ``config`` says.

        Args:
            weights: the global weights of this round (names, shapes and float32 dtype of the
                model's ``state_dict``; finite values).
            config: epochs, batch size, optimizer, FedProx ``proximal_mu``, seed, step limit.

        Returns:
            New weights (float32 copies), the number of local training examples, and metrics
            ``loss`` (mean training loss over the steps taken, without the proximal term) and
            ``accuracy`` (training accuracy over those steps), or ``mse`` for regression.

        Raises:
            ConfigError: ``weights`` do not fit the model, or ``config`` is out of range.
        """
        _check_fit_config(config)
        _load_weights(self._model, weights)
        self._model.train()
        seed = _round_seed(config.seed, config.round)
        plan = LocalTraining(
            model=self._model,
            optimizer=_make_optimizer(self._model, config),
            sampler=shuffled_batches(self.num_train, config.batch_size),
            num_examples=self.num_train,
        )
        anchor = (
            [p.detach().clone() for p in self._model.parameters()] if config.proximal_mu > 0 else []
        )
        extra: Metrics = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            if self._hook is not None:
                plan = self._hook.prepare(plan, config)
            try:
                metrics = _train_epochs(
                    plan.model,
                    plan.optimizer,
                    self._batches(plan.sampler, generator, config.epochs),
                    loss_fn=self._loss,
                    proximal=_Proximal(list(self._model.parameters()), anchor, config.proximal_mu),
                    max_steps=config.max_steps,
                    task=self._task,
                )
            finally:
                if self._hook is not None:
                    extra = self._hook.finish(plan)
        return FitResult(
            weights=_read_weights(self._model),
            num_examples=self.num_train,
            metrics={**metrics, **extra},
        )

    def evaluate(self, weights: Weights) -> EvaluateResult:
        """Evaluate ``weights`` on the local test split.

        Returns:
            The number of test examples, the mean loss (cross-entropy, or squared error for
            regression) and ``accuracy`` (or ``mse`` for regression).

        Raises:
            ConfigError: ``weights`` do not fit the model.
        """
        _load_weights(self._model, weights)
        self._model.eval()
        loss_sum = 0.0
        correct = 0
        with torch.no_grad():
            for x, y in zip(
                torch.split(self._x_test, self._eval_batch_size),
                torch.split(self._y_test, self._eval_batch_size),
                strict=True,
            ):
                out = self._model(x)
                loss_sum += float(self._loss(out, y, reduction="sum"))
                if self._task == "classification":
                    correct += int((out.argmax(dim=1) == y).sum())
        self._model.train()
        loss = loss_sum / self.num_test
        if self._task == "classification":
            metrics = {"accuracy": correct / self.num_test}
        else:
            metrics = {"mse": loss}
        return EvaluateResult(num_examples=self.num_test, loss=loss, metrics=metrics)

    def _batches(
        self, sampler: EpochSampler, generator: torch.Generator, epochs: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(epochs):
            for index in sampler(generator):
                yield self._x_train[index], self._y_train[index]

    def _loss(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self._task == "classification":
            return nn.functional.cross_entropy(out, y, reduction=reduction)
        if out.ndim != 2 or out.shape[1] != 1:
            raise ConfigError(
                f"a regression model must output shape (batch, 1), got {tuple(out.shape)}"
            )
        return nn.functional.mse_loss(out[:, 0], y, reduction=reduction)


class _SummedLoss:
    """A loss with ``reduction="sum"``, as per-example gradient sums need."""

    reduction = "sum"

    def __init__(self, loss: Callable[..., torch.Tensor]) -> None:
        self._loss = loss

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._loss(out, y, reduction="sum")


@dataclass(frozen=True, slots=True)
class _Proximal:
    """FedProx's proximal term ``mu / 2 * ||w - w_global||^2`` (Li et al., MLSys 2020, eq. 2)."""

    params: list[nn.Parameter]
    anchor: list[torch.Tensor]
    mu: float

    def __call__(self) -> torch.Tensor | None:
        if self.mu <= 0:
            return None
        squared = torch.stack(
            [(p - a).pow(2).sum() for p, a in zip(self.params, self.anchor, strict=True)]
        )
        return 0.5 * self.mu * squared.sum()


def _train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    proximal: Callable[[], torch.Tensor | None],
    max_steps: int,
    task: str,
) -> Metrics:
    """Run the local optimisation loop; return the mean data loss and accuracy (or mse).

    One step per batch: forward, data loss plus the proximal term (if any), backward, optimizer
    step. Stops after ``max_steps`` steps when ``max_steps > 0``. Empty batches (possible under
    Poisson sampling) still take a step but count nothing toward the metrics.
    """
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.int64)
    seen = 0
    for step, (x, y) in enumerate(batches, start=1):
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        data_loss = loss_fn(out, y)
        penalty = proximal()
        total = data_loss if penalty is None else data_loss + penalty
        torch.autograd.backward(total)
        optimizer.step()
        if len(y):
            loss_sum += data_loss.detach().double() * len(y)
            if task == "classification":
                correct += (out.detach().argmax(dim=1) == y).sum()
            seen += len(y)
        if max_steps and step >= max_steps:
            break
    if seen == 0:
        raise ConfigError("local training saw no examples (all batches were empty)")
    mean_loss = float(loss_sum) / seen
    if task == "classification":
        return {"loss": mean_loss, "accuracy": int(correct) / seen}
    return {"loss": mean_loss, "mse": mean_loss}


def _check_fit_config(config: FitConfig) -> None:
    checks = (
        ("epochs", config.epochs >= 1, ">= 1"),
        ("batch_size", config.batch_size >= 1, ">= 1"),
        ("learning_rate", np.isfinite(config.learning_rate) and config.learning_rate > 0, "> 0"),
        ("momentum", 0 <= config.momentum < 1, "in [0, 1)"),
        ("weight_decay", np.isfinite(config.weight_decay) and config.weight_decay >= 0, ">= 0"),
        ("optimizer", config.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
        ("proximal_mu", np.isfinite(config.proximal_mu) and config.proximal_mu >= 0, ">= 0"),
        ("seed", config.seed >= 0, ">= 0"),
        ("round", config.round >= 0, ">= 0"),
        ("max_steps", config.max_steps >= 0, ">= 0 (0: no limit)"),
    )
    for name, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"FitConfig.{name} must be {allowed}, got {getattr(config, name)!r}")


def _make_optimizer(model: nn.Module, config: FitConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params,
        lr=config.learning_rate,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def _round_seed(seed: int, round_number: int) -> int:
    """A 63-bit torch seed derived from the job's seed and the round number."""
    state = np.random.SeedSequence([seed, round_number]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def _to_tensors(
    split: str, x: npt.NDArray[np.generic], y: npt.NDArray[np.generic], task: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check one split and copy it into torch tensors (float32 features; int64 or float32 y)."""
    x_arr, y_arr = np.asarray(x), np.asarray(y)
    if x_arr.ndim < 2 or x_arr.shape[0] == 0:
        raise ConfigError(f"x_{split} must have shape (n, ...) with n >= 1, got {x_arr.shape}")
    if y_arr.shape != (x_arr.shape[0],):
        raise ConfigError(f"y_{split} has shape {y_arr.shape}, expected ({x_arr.shape[0]},)")
    if not (np.issubdtype(x_arr.dtype, np.floating) or np.issubdtype(x_arr.dtype, np.integer)):
        raise ConfigError(f"x_{split} must hold real numbers, got dtype {x_arr.dtype}")
    features = x_arr.astype(np.float32)
    if not np.isfinite(features).all():
        raise ConfigError(f"x_{split} contains NaN or infinite values (after float32 conversion)")
    if task == "classification":
        if not np.issubdtype(y_arr.dtype, np.integer):
            raise ConfigError(f"y_{split} must hold integer class labels, got dtype {y_arr.dtype}")
        if y_arr.min() < 0:
            raise ConfigError(f"y_{split} has a negative label {y_arr.min()}")
        labels = torch.tensor(y_arr.astype(np.int64))
    else:
        targets = y_arr.astype(np.float32)
        if not np.isfinite(targets).all():
            raise ConfigError(f"y_{split} contains NaN or infinite values")
        labels = torch.tensor(targets)
    return torch.tensor(features), labels


def _read_weights(model: nn.Module) -> Weights:
    """Copy the model's ``state_dict`` into float32 numpy arrays, in order."""
    return {
        name: tensor.detach().to(torch.float32).numpy().copy()
        for name, tensor in model.state_dict().items()
    }


def _load_weights(model: nn.Module, weights: Weights) -> None:
    """Copy ``weights`` into the model after checking names, shapes, dtype and finiteness."""
    state = model.state_dict()
    if weights.keys() != state.keys():
        missing = [n for n in state if n not in weights]
        unexpected = [n for n in weights if n not in state]
        raise ConfigError(
            f"weights do not match the model: missing {missing}, unexpected {unexpected}"
        )
    for name, target in state.items():
        array = weights[name]
        if not isinstance(array, np.ndarray) or array.dtype != np.float32:
            kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise ConfigError(f"weights[{name!r}] must be a float32 numpy array, got {kind}")
        if array.shape != tuple(target.shape):
            raise ConfigError(
                f"weights[{name!r}] has shape {array.shape}, the model needs {tuple(target.shape)}"
            )
        if not np.isfinite(array).all():
            raise ConfigError(f"weights[{name!r}] contains NaN or infinite values")
    for name, target in state.items():  # state_dict tensors share storage with the model
        np.copyto(target.numpy(), weights[name])
