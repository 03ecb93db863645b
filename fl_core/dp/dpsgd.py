"""Example-level DP-SGD at a data owner through Opacus, and the DP-FedSGD gradient sum.

This is the only module of Bulwark that imports Opacus. It provides:

- :class:`DPSGDSession`: turns (model, optimizer, data loader) into a private training session
  with Poisson sampling, a noise multiplier (given, or calibrated to a target epsilon over the
  planned rounds), flat, per-layer, ghost (one ``PrivacyEngine.make_private`` call) or
  book-keeping clipping (:mod:`fl_core.dp.bookkeeping`, Opacus's Poisson loader and the same
  update as Opacus's optimizer, in one backward pass), and an epsilon report (RDP and PLD)
  after each round. The same session serves every federated round:
  ``load_weights`` (new global model), ``train_round``, read the report.
- :func:`clipped_gradient_sum`: for DP-FedSGD, the sum of per-example clipped gradients over a
  Poisson-sampled batch, as a flat vector, plus the batch size (Opacus computes the per-example
  gradients).
- :func:`opacus_gaussian_rdp`: Opacus's RDP analysis of the subsampled Gaussian, which
  :mod:`fl_core.dp.accounting` calls (the PLD accountant is ``dp_accounting``'s).

Notes:
    Randomness (REFERENCES.md section 3.6; DESIGN.md security rule 5). Opacus's own
    ``secure_mode`` needs ``torchcsprng``, which has no release for torch 2.x, and without it
    Opacus draws noise and batches from torch's Mersenne Twister. The session therefore replaces
    the two places where Opacus draws randomness: the optimizer's ``add_noise`` (the same step as
    Opacus's, with the noise from :func:`fl_core.dp._torch_rng.gaussian_like`: Holohan-Braghin
    in secure mode; the book-keeping step calls the same function) and the Poisson loader's
    batch sampler (:class:`fl_core.dp._torch_rng.PoissonBatchSampler`). Both read one
    AES-128-CTR stream keyed with 128 bits from ``os.urandom`` (:func:`fl_core.dp.noise.csprng`),
    or the ``rng`` the caller passes (tests). No ``torch.Generator`` is involved. The noise is a
    float added to float gradients (see the floating-point caveat in ``fl_core/dp/README.md``);
    DP-FedSGD adds integer noise instead.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.accountants.analysis.rdp import compute_rdp
from opacus.data_loader import DPDataLoader
from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import (
    GradSampleModuleFastGradientClipping,
)
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader

from fl_core.dp import bookkeeping
from fl_core.dp._torch_rng import PoissonBatchSampler, gaussian_like
from fl_core.dp.accounting import (
    ACCOUNTANTS,
    EpsilonReport,
    GaussianEvent,
    check_delta,
    compose,
    noise_multiplier_for,
)
from fl_core.dp.noise import csprng
from fl_core.dp.sampling import poisson_indices
from fl_core.errors import CodecError, ConfigError


def opacus_gaussian_rdp(
    *, noise_multiplier: float, sample_rate: float, orders: Sequence[float]
) -> npt.NDArray[np.float64]:
    """One step of the Poisson-subsampled Gaussian, in RDP at ``orders`` (Opacus's analysis)."""
    rdp = compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(orders)
    )
    return np.asarray(rdp, dtype=np.float64)


class ClippingMode(StrEnum):
    """How per-example gradients are clipped.

    FLAT clips the whole gradient to ``max_grad_norm``; PER_LAYER clips each parameter tensor to its
    own bound (the bounds' L2 norm is the total sensitivity); GHOST is flat clipping computed with
    Opacus's fast gradient / ghost clipping (norms without materialising per-example gradients for
    the layers that allow it, per-example gradients for the others); AUTO is GHOST when every layer
    with parameters has an Opacus norm or gradient sampler (Linear, Embedding, Conv, the norm
    layers), else FLAT (per-example gradients, with functorch for the other layers).

    Notes:
        AUTO follows ``benchmarks/dpsgd.py`` (one thread, 2-core machine): ghost clipping was 2-12x
        faster than per-example hooks on the MLP and 1.8x faster on the example CNN at batch 256,
        and at most 10% slower on the 26k-parameter tanh CNN.
    """

    FLAT = "flat"
    PER_LAYER = "per_layer"
    GHOST = "ghost"
    BOOKKEEPING = "bookkeeping"
    AUTO = "auto"


def resolve_clipping(model: nn.Module, mode: ClippingMode) -> ClippingMode:
    """Return the concrete mode for ``model``: AUTO becomes BOOKKEEPING, GHOST or FLAT."""
    if mode is not ClippingMode.AUTO:
        return mode
    if bookkeeping.supports(model):
        return ClippingMode.BOOKKEEPING
    ghostable = tuple(GradSampleModuleFastGradientClipping.NORM_SAMPLERS) + tuple(
        GradSampleModuleFastGradientClipping.GRAD_SAMPLERS
    )
    layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    if layers and all(isinstance(m, ghostable) for m in layers):
        return ClippingMode.GHOST
    return ClippingMode.FLAT


@dataclass(frozen=True, slots=True, kw_only=True)
class DPSGDConfig:
    """Parameters of local DP-SGD at one data owner.

    Attributes:
        max_grad_norm: L2 bound C of each example's gradient (the total bound under PER_LAYER).
        delta: the delta of reported guarantees (0 < delta < 1).
        noise_multiplier: noise std / C. Exactly one of this and ``target_epsilon`` is set.
        target_epsilon: calibrate the noise so that ``planned_rounds`` rounds spend at most this.
        planned_rounds: rounds the owner plans to take part in (for ``target_epsilon``).
        epochs_per_round: local epochs per round (each epoch is ``len(data_loader)`` steps).
        max_steps_per_round: stop a round after this many steps (0: no limit).
        clipping: flat, per-layer, ghost, book-keeping, or AUTO (book-keeping where every layer
            allows it, else ghost where every layer allows it, else flat).
        layer_norms: PER_LAYER bounds, one per trainable parameter tensor; ``None`` splits
            ``max_grad_norm`` equally (each ``C / sqrt(L)``).
        secure_mode: use Opacus's secure noise construction (see the module notes).
        calibration_accountant: accountant that certifies ``target_epsilon`` (``"rdp"``/``"pld"``).
        report_pld: also report the PLD epsilon after each round (well under 1 s per report).
    """

    max_grad_norm: float
    delta: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    planned_rounds: int = 1
    epochs_per_round: int = 1
    max_steps_per_round: int = 0
    clipping: ClippingMode = ClippingMode.AUTO
    layer_norms: tuple[float, ...] | None = None
    secure_mode: bool = True
    calibration_accountant: Literal["rdp", "pld"] = "pld"
    report_pld: bool = True

    def __post_init__(self) -> None:
        if self.clipping not in tuple(ClippingMode):
            allowed = [m.value for m in ClippingMode]
            raise ConfigError(f"clipping must be one of {allowed}, got {self.clipping!r}")
        object.__setattr__(self, "clipping", ClippingMode(self.clipping))  # "flat" -> FLAT
        c = self.max_grad_norm
        if not (isinstance(c, int | float) and math.isfinite(c) and c > 0):
            raise ConfigError(f"max_grad_norm must be a finite number > 0, got {c!r}")
        check_delta(self.delta)
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError("set exactly one of noise_multiplier and target_epsilon")
        z = self.noise_multiplier
        if z is not None and not (math.isfinite(z) and 0 < z <= 1e6):
            raise ConfigError(f"noise_multiplier must be a number in (0, 1e6], got {z}")
        eps = self.target_epsilon
        if eps is not None and not (math.isfinite(eps) and eps > 0):
            raise ConfigError(f"target_epsilon must be a finite number > 0, got {eps}")
        for name in ("planned_rounds", "epochs_per_round"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        if self.max_steps_per_round < 0:
            raise ConfigError(f"max_steps_per_round must be >= 0, got {self.max_steps_per_round}")
        if self.layer_norms is not None:
            if self.clipping is not ClippingMode.PER_LAYER:
                raise ConfigError("layer_norms is only allowed with clipping='per_layer'")
            if not all(math.isfinite(b) and b > 0 for b in self.layer_norms):
                raise ConfigError(f"layer_norms must all be finite and > 0, got {self.layer_norms}")
        if self.calibration_accountant not in ACCOUNTANTS:
            raise ConfigError(
                f"calibration_accountant must be 'rdp' or 'pld', got {self.calibration_accountant}"
            )


@dataclass(frozen=True, slots=True)
class RoundReport:
    """What one local round did and what the owner has spent after it.

    Attributes:
        steps: optimizer steps taken (each one Poisson-sampled batch).
        examples: examples processed over all steps.
        mean_loss: mean training loss over the non-empty batches (NaN if all were empty).
        event: this round's privacy event (for the ledger).
        epsilon: cumulative epsilon over all rounds of this session (RDP and PLD).
    """

    steps: int
    examples: int
    mean_loss: float
    event: GaussianEvent
    epsilon: EpsilonReport


def _use_csprng_noise(optimizer: Any, rng: np.random.Generator) -> None:
    """Make an Opacus ``DPOptimizer`` draw its noise from ``rng`` (see the module notes).

    The replacement does what ``DPOptimizer.add_noise`` does (Opacus 1.6, both the hooks and the
    fast-gradient-clipping optimizers): for every parameter, grad = summed clipped gradients +
    N(0, (noise_multiplier * max_grad_norm)^2), marked as processed; only the source differs.
    """

    def add_noise() -> None:
        multiplier = getattr(optimizer, "_adjusted_noise_multiplier", optimizer.noise_multiplier)
        std = float(multiplier) * float(optimizer.max_grad_norm)
        for p in optimizer.params:
            _check_processed_flag(p.summed_grad)
            noise = gaussian_like(p.summed_grad, std=std, rng=rng, secure=optimizer.secure_mode)
            p.grad = (p.summed_grad + noise).view_as(p)
            _mark_as_processed(p.summed_grad)

    optimizer.generator = None
    optimizer.add_noise = add_noise


def _use_csprng_batches(loader: Any, *, steps: int, rng: np.random.Generator) -> None:
    """Give Opacus's Poisson ``DPDataLoader`` a batch sampler that flips its coins with ``rng``."""
    sampler = PoissonBatchSampler(
        num_samples=len(loader.dataset), sample_rate=loader.sample_rate, steps=steps, rng=rng
    )
    # DataLoader refuses to reassign batch_sampler after construction (torch checks it in
    # __setattr__); its iterators read the attribute, so it is set on the instance directly.
    object.__setattr__(loader, "batch_sampler", sampler)


def _backward(loss: torch.Tensor) -> None:
    with warnings.catch_warnings():
        # Opacus's per-example hooks sit on modules whose inputs need no gradient; torch warns
        # about that on every backward pass although the hooks compute what Opacus needs.
        warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
        loss.backward()  # type: ignore[no-untyped-call]


class _BookKeepingStep:
    """One DP-SGD step with book-keeping clipping, the same update as Opacus's ``DPOptimizer``.

    ``grad = (sum_i clip_C(grad_i) + N(0, (z C)^2)) / expected_batch_size``, then the wrapped
    optimizer's step: what Opacus computes with ``loss_reduction="mean"`` (its ``scale_grad``
    divides by the expected, not the drawn, batch size, so that the batch size leaks nothing).
    An empty Poisson batch still adds the noise.

    Raises:
        ConfigError: if the criterion has no ``reduction`` (the per-example losses are its
            ``reduction="sum"`` copy).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: nn.Module,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        secure: bool,
        rng: np.random.Generator,
    ) -> None:
        if not isinstance(getattr(criterion, "reduction", None), str):
            raise ConfigError(
                "book-keeping clipping needs a criterion with a 'reduction' attribute "
                f"(such as nn.CrossEntropyLoss), got {type(criterion).__name__}"
            )
        self._summed = copy.copy(criterion)
        setattr(self._summed, "reduction", "sum")  # noqa: B010  (nn.Module's typed __setattr__)
        self._keeper = bookkeeping.BookKeeper(model)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._optimizer = optimizer
        self._std = noise_multiplier * max_grad_norm
        self._max_grad_norm = max_grad_norm
        self._scale = 1.0 / max(expected_batch_size, 1)
        self._secure = secure
        self._rng = rng

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> float | None:
        """Take one step on a Poisson batch; return its mean loss (``None`` if it is empty)."""
        mean_loss: float | None = None
        if len(targets):
            result = self._keeper.clipped_sum(
                inputs, targets, loss_fn=self._summed, max_grad_norm=self._max_grad_norm
            )
            sums = result.grads
            mean_loss = float(result.loss) / len(targets)
        else:
            sums = [torch.zeros_like(p) for p in self._params]
        for p, total in zip(self._params, sums, strict=True):
            noise = gaussian_like(total, std=self._std, rng=self._rng, secure=self._secure)
            p.grad = (total + noise).mul_(self._scale).view_as(p)
        self._optimizer.step()
        for p in self._params:
            p.grad = None
        return mean_loss


class DPSGDSession:
    """A private local-training session that lives across federated rounds.

    Args:
        model: the torch model (its parameters are trained in place; it must pass Opacus's
            ``ModuleValidator``: no BatchNorm, for instance).
        optimizer: an optimizer over ``model``'s parameters; its state is reset every round.
        data_loader: yields ``(inputs, targets)``; its ``batch_size`` sets the sampling rate
            ``q = 1 / len(data_loader)``. Opacus replaces it with a Poisson-sampling loader.
        criterion: the loss (``reduction="mean"``).
        config: the DP parameters.
        rng: the source of every noise value and batch (``None``: a fresh
            :func:`fl_core.dp.noise.csprng`, AES-128-CTR keyed from ``os.urandom``; tests pass a
            seeded one).

    Raises:
        ConfigError: if the model does not validate, or the config does not fit the model.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: DataLoader[Any],
        criterion: nn.Module,
        config: DPSGDConfig,
        rng: np.random.Generator | None = None,
    ) -> None:
        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise ConfigError(f"model is not DP-SGD compatible: {[str(e) for e in errors]}")
        self._config = config
        self._raw_model = model
        self.sample_rate = 1.0 / len(data_loader)
        self.steps_per_round = config.epochs_per_round * len(data_loader)
        if config.max_steps_per_round:
            self.steps_per_round = min(self.steps_per_round, config.max_steps_per_round)
        if config.target_epsilon is None:
            self.noise_multiplier = float(config.noise_multiplier or 0.0)
        else:
            self.noise_multiplier = noise_multiplier_for(
                target_epsilon=config.target_epsilon,
                delta=config.delta,
                sample_rate=self.sample_rate,
                steps=config.planned_rounds * self.steps_per_round,
                accountant=config.calibration_accountant,
            )
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.clipping = resolve_clipping(model, config.clipping)
        max_grad_norm: float | list[float] = float(config.max_grad_norm)
        if self.clipping is ClippingMode.PER_LAYER:
            norms = config.layer_norms or tuple(
                config.max_grad_norm / math.sqrt(len(trainable)) for _ in trainable
            )
            if len(norms) != len(trainable):
                raise ConfigError(
                    f"layer_norms has {len(norms)} bounds, the model has {len(trainable)} "
                    "trainable parameter tensors"
                )
            max_grad_norm = list(norms)
        self.rng = csprng() if rng is None else rng
        self._module: nn.Module
        self._optimizer: Any  # opacus.optimizers.DPOptimizer
        self._loader: Any  # opacus.data_loader.DPDataLoader
        self._criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        self._bk: _BookKeepingStep | None = None
        if self.clipping is ClippingMode.BOOKKEEPING:
            self._bk = _BookKeepingStep(
                model=model,
                optimizer=optimizer,
                criterion=criterion,
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=float(config.max_grad_norm),
                expected_batch_size=int(len(data_loader.dataset) * self.sample_rate),  # type: ignore[arg-type]
                secure=config.secure_mode,
                rng=self.rng,
            )
            self._module, self._optimizer, self._criterion = model, optimizer, criterion
            self._base_optimizer = optimizer
            self._loader = DPDataLoader.from_data_loader(data_loader)
        else:
            self._make_private(model, optimizer, data_loader, criterion, max_grad_norm)
            self._base_optimizer = self._optimizer.original_optimizer
        _use_csprng_batches(self._loader, steps=len(self._loader.batch_sampler), rng=self.rng)
        self._events: list[GaussianEvent] = []

    def _make_private(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: DataLoader[Any],
        criterion: nn.Module,
        max_grad_norm: float | list[float],
    ) -> None:
        """Wrap the training objects with Opacus (flat, per-layer or ghost clipping)."""
        with warnings.catch_warnings():
            # Opacus warns that its torchcsprng-based secure RNG is off; see the module notes.
            warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
            engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        ghost = self.clipping is ClippingMode.GHOST
        made = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=data_loader,
            criterion=criterion,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            clipping="per_layer" if self.clipping is ClippingMode.PER_LAYER else "flat",
            grad_sample_mode="ghost" if ghost else "hooks",
        )
        if ghost:
            self._module, self._optimizer, self._criterion, self._loader = made
        else:
            self._module, self._optimizer, self._loader = made
            self._criterion = criterion
        self._optimizer.secure_mode = self._config.secure_mode
        _use_csprng_noise(self._optimizer, self.rng)

    @property
    def model(self) -> nn.Module:
        """The caller's model (trained in place)."""
        return self._raw_model

    @property
    def events(self) -> tuple[GaussianEvent, ...]:
        """One privacy event per completed round."""
        return tuple(self._events)

    def next_round_event(self) -> GaussianEvent:
        """The most the next round can spend (for the ledger, before training starts)."""
        return GaussianEvent(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps_per_round,
        )

    def load_weights(self, weights: Mapping[str, npt.NDArray[np.float32]]) -> None:
        """Load a round's global weights (``state_dict`` names, float32 arrays) into the model.

        Raises:
            CodecError: if a name is missing or unknown, or a dtype or shape does not match.
        """
        current = self._raw_model.state_dict()
        if set(weights) != set(current):
            raise CodecError(
                f"weights have names {sorted(set(weights) ^ set(current))} that do not match"
            )
        tensors = {}
        for name, value in weights.items():
            array = np.asarray(value)
            if array.dtype != np.float32:
                raise CodecError(f"weight {name!r} has dtype {array.dtype}, expected float32")
            expected = tuple(current[name].shape)
            if tuple(array.shape) != expected:
                raise CodecError(f"weight {name!r} has shape {array.shape}, expected {expected}")
            tensors[name] = torch.from_numpy(array.copy())
        self._raw_model.load_state_dict(tensors, strict=True)

    def weights(self) -> dict[str, npt.NDArray[np.float32]]:
        """The model's current weights as float32 numpy arrays (copies)."""
        return {
            name: t.detach().cpu().numpy().astype(np.float32, copy=True)
            for name, t in self._raw_model.state_dict().items()
        }

    def epsilon(self) -> EpsilonReport:
        """Cumulative epsilon of all completed rounds, at the config's delta."""
        return compose(self._events, delta=self._config.delta, pld=self._config.report_pld)

    def train_round(self) -> RoundReport:
        """Run one round of local DP-SGD from the currently loaded weights.

        Each step draws a fresh Poisson batch (possibly empty: the step still adds noise, so
        that an empty batch is indistinguishable from a full one). Optimizer state (momentum)
        starts from zero every round.
        """
        self._base_optimizer.state.clear()
        self._module.train()
        steps = examples = 0
        losses: list[float] = []
        for _ in range(self._config.epochs_per_round):
            batches = iter(self._loader)
            while steps < self.steps_per_round:
                try:
                    inputs, targets = next(batches)
                except StopIteration:
                    break
                if self._bk is not None:
                    mean_loss = self._bk.step(inputs, targets)
                else:
                    self._optimizer.zero_grad()
                    loss = self._criterion(self._module(inputs), targets)
                    _backward(loss)
                    self._optimizer.step()
                    mean_loss = float(loss.detach()) if len(targets) else None
                steps += 1
                examples += len(targets)
                if mean_loss is not None:
                    losses.append(mean_loss)
        self._optimizer.zero_grad()
        event = GaussianEvent(
            noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate, steps=steps
        )
        self._events.append(event)
        return RoundReport(
            steps=steps,
            examples=examples,
            mean_loss=float(np.mean(losses)) if losses else math.nan,
            event=event,
            epsilon=self.epsilon(),
        )


@dataclass(frozen=True, slots=True)
class ClippedGradientSum:
    """One institution's contribution to a DP-FedSGD step, before quantization and noise.

    Attributes:
        vector: sum over the sampled examples of each example's gradient clipped to L2 norm
            ``clip`` (times ``1 - 2**-20``), flattened in ``model.named_parameters()`` order over
            the trainable parameters. float64, so that summation error cannot move one example's
            contribution beyond the clipping bound (see ``fl_core/dp/README.md``).
        batch_size: how many examples the Poisson sampling selected.
    """

    vector: npt.NDArray[np.float64] = field(repr=False)
    batch_size: int


def clipped_gradient_sum(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    clip: float,
    sample_rate: float,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    rng: np.random.Generator,
    physical_batch: int = 256,
) -> ClippedGradientSum:
    """Sum of per-example clipped gradients over a Poisson-sampled batch (DP-FedSGD, step 1).

    Args:
        model: the model at the round's global weights (not wrapped by Opacus elsewhere).
        inputs: the institution's examples (first dimension indexes examples).
        targets: their labels.
        clip: per-example L2 bound C.
        sample_rate: Poisson sampling probability q of each example (the same at every
            institution, so that the union of the batches is a Poisson sample of the union).
        loss_fn: loss with ``reduction="sum"`` semantics (e.g. ``nn.CrossEntropyLoss(reduction=
            "sum")``): the gradient of the summed loss is the sum of per-example gradients.
        rng: random generator for the sampling (:func:`fl_core.dp.noise.csprng`).
        physical_batch: examples per forward/backward pass (memory bound, not privacy).

    Returns:
        A :class:`ClippedGradientSum`.

    Raises:
        ConfigError: for a bad ``clip``, ``physical_batch`` or a loss that does not sum.
        CodecError: if ``inputs`` and ``targets`` disagree on the number of examples.
    """
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigError(f"clip must be a finite number > 0, got {clip}")
    if physical_batch < 1:
        raise ConfigError(f"physical_batch must be an integer >= 1, got {physical_batch}")
    if getattr(loss_fn, "reduction", "sum") != "sum":
        raise ConfigError("loss_fn must sum over the batch (reduction='sum')")
    if len(inputs) != len(targets):
        raise CodecError(f"inputs has {len(inputs)} examples, targets {len(targets)}")
    chosen = poisson_indices(len(inputs), rate=sample_rate, rng=rng)
    params = [p for p in model.parameters() if p.requires_grad]
    sums = [torch.zeros(p.shape, dtype=torch.float64) for p in params]
    bound = clip * (1.0 - 2.0**-20)
    gsm = GradSampleModule(model, loss_reduction="sum")
    try:
        for start in range(0, len(chosen), physical_batch):
            idx = torch.from_numpy(chosen[start : start + physical_batch])
            model.zero_grad(set_to_none=True)
            _backward(loss_fn(gsm(inputs[idx]), targets[idx]))
            per_example = [
                p.grad_sample.detach().to(torch.float64)  # type: ignore[attr-defined]
                for p in params
            ]
            sq = sum(g.reshape(len(idx), -1).pow(2).sum(dim=1) for g in per_example)
            norms = torch.sqrt(torch.as_tensor(sq, dtype=torch.float64))
            factor = torch.clamp(bound / torch.clamp(norms, min=1e-300), max=1.0)
            for total, g in zip(sums, per_example, strict=True):
                total += torch.einsum("i,i...->...", factor, g)
            for p in params:
                p.grad_sample = None  # type: ignore[attr-defined]
    finally:
        gsm.cleanup()
        model.zero_grad(set_to_none=True)
    flat = torch.cat([t.reshape(-1) for t in sums]) if sums else torch.zeros(0, dtype=torch.float64)
    return ClippedGradientSum(vector=flat.numpy().copy(), batch_size=len(chosen))
