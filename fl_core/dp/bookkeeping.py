"""Per-example clipped gradient sums in one backward pass: book-keeping clipping (BK).

Bu, Wang, Zha, Karypis, "Differentially Private Optimization on Large Model at Small Cost"
(ICML 2023). A plain backward pass already holds, for every layer, the layer's input ``a`` (kept
by a forward hook) and the gradient of the summed loss with respect to the layer's output ``g``
(asked of autograd directly). For the layers here the gradient of example i is a function of
``(a_i, g_i)`` alone, so:

- its squared norm comes from ``(a, g)`` without a second backward pass (Opacus's ghost
  clipping runs one backward for the norms and a second one on the reweighted loss);
- the clipped sum ``sum_i c_i grad_i`` with ``c_i = min(1, C / ||grad_i||)`` is the ordinary
  weight-gradient product with ``g`` replaced by ``c * g``, the same cost as the weight gradient
  of a non-private backward pass, which autograd is never asked for (it only computes the
  gradients with respect to the layer outputs).

Per layer (the hybrid rule of Bu et al., section 3):

- ``nn.Linear`` on ``(B, d)`` inputs: ``||g_i a_i^T||^2 = ||g_i||^2 ||a_i||^2`` (ghost norm,
  O(B (d + p))); on ``(B, T, d)`` inputs the ghost norm ``sum_{t,t'} (a_t . a_t')(g_t . g_t')`` when
  ``2 T^2 < p d``, else the per-example gradients ``g_i^T a_i`` (``p x d``) are formed.
- ``nn.Conv2d`` (zero padding, one group): the per-example gradients (``B x Cout x Cin kh kw``)
  are formed by one grouped weight-gradient convolution: for images the ghost norm's
  ``T = H W`` makes ``2 T^2`` larger than ``Cout Cin kh kw`` in every layer of the built-in
  CNNs (conv2 of ``cnn``: 76,832 against 4,608), so forming them is the cheaper of the two.

Notes:
    Soundness. The squared norms are accumulated in float64 from float32 per-layer terms, and the
    clipping factor uses ``C (1 - 2^-16)``: the float32 rounding of the per-layer terms (relative
    error far below 2^-16 for the sums of squares of these layer sizes) cannot lift a clipped
    example above C. Each example's contribution to the sum is then its gradient times a
    factor <= 1 that depends on that example only, so adding or removing one example moves the
    sum by at most C (the sensitivity the accountants assume).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.grad import conv2d_weight

from fl_core.errors import ConfigError

#: Layer types whose per-example gradient norms and clipped sums this module computes.
SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)

_MARGIN = 1.0 - 2.0**-16


def supports(model: nn.Module) -> bool:
    """Whether ``model`` has trainable parameters and each belongs to a supported layer."""
    try:
        return bool(_layers(model))
    except ConfigError:
        return False


def _layers(model: nn.Module) -> list[nn.Module]:
    """The modules that own trainable parameters; ConfigError if one is not supported."""
    owned: dict[int, str] = {}
    layers = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if not isinstance(module, SUPPORTED_LAYERS):
            raise ConfigError(
                f"book-keeping clipping does not support layer {name!r} "
                f"({type(module).__name__}); supported: Linear, Conv2d"
            )
        if isinstance(module, nn.Conv2d) and (
            module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str)
        ):
            raise ConfigError(
                f"book-keeping clipping needs Conv2d {name!r} with groups=1, zero padding given "
                "as integers"
            )
        for p in own:
            if id(p) in owned:
                raise ConfigError(f"parameter shared by {owned[id(p)]!r} and {name!r}")
            owned[id(p)] = name
        layers.append(module)
    return layers


@dataclass(slots=True)
class _Record:
    module: nn.Module
    inputs: torch.Tensor
    output: torch.Tensor


@dataclass(frozen=True, slots=True)
class ClippedSum:
    """The result of :func:`clipped_sum`.

    Attributes:
        grads: for each trainable parameter of the model (``model.parameters()`` order), the sum
            over the batch of the per-example gradients clipped to norm C.
        norms: each example's gradient norm before clipping (float64, shape ``(B,)``).
        loss: the summed loss over the batch (detached).
    """

    grads: list[torch.Tensor]
    norms: torch.Tensor
    loss: torch.Tensor


class BookKeeper:
    """Computes per-example clipped gradient sums of one model (hooks stay installed).

    Args:
        model: a model whose trainable parameters all sit in :data:`SUPPORTED_LAYERS` (each
            layer called once per forward pass).

    Raises:
        ConfigError: if a layer with trainable parameters is not supported.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._layers = _layers(model)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._records: list[_Record] = []
        self._recording = False
        self._handles = [layer.register_forward_hook(self._hook) for layer in self._layers]

    def _hook(
        self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        if self._recording:
            self._records.append(_Record(module, args[0].detach(), output))

    def close(self) -> None:
        """Remove the forward hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clipped_sum(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        max_grad_norm: float,
    ) -> ClippedSum:
        """Sum over the batch of each example's loss gradient clipped to ``max_grad_norm``.

        Args:
            inputs: a non-empty batch (first dimension indexes examples).
            targets: its targets.
            loss_fn: the loss summed over the batch (``reduction="sum"``), so that the gradient
                of example i is the gradient of its own loss.
            max_grad_norm: the bound C (> 0).

        Raises:
            ConfigError: if a layer ran more than once or not at all in the forward pass.
        """
        self._records = []
        self._recording = True
        try:
            loss = loss_fn(self.model(inputs), targets)
        finally:
            self._recording = False
        records, self._records = self._records, []
        seen = [r.module for r in records]
        if len(seen) != len(self._layers) or {id(m) for m in seen} != {id(m) for m in self._layers}:
            raise ConfigError("book-keeping clipping needs every layer called exactly once")
        outputs = [r.output for r in records]
        grads_out = torch.autograd.grad(loss, outputs, allow_unused=True)
        batch = inputs.shape[0]
        sq = torch.zeros(batch, dtype=torch.float64, device=inputs.device)
        prepared = []
        for record, g in zip(records, grads_out, strict=True):
            g = torch.zeros_like(record.output) if g is None else g.detach()
            state = _prepare(record.module, record.inputs, g)
            sq += state.sq_norms.to(torch.float64)
            prepared.append(state)
        norms = torch.sqrt(sq)
        bound = float(max_grad_norm) * _MARGIN
        factor64 = torch.clamp(bound / torch.clamp(norms, min=1e-300), max=1.0)
        by_param: dict[int, torch.Tensor] = {}
        for state in prepared:
            factor = factor64.to(state.dtype)
            for p, grad in state.clipped(factor):
                by_param[id(p)] = grad
        return ClippedSum(
            grads=[by_param[id(p)] for p in self._params], norms=norms, loss=loss.detach()
        )


class _Prepared:
    """One layer's per-example squared norms and a way to form its clipped sums."""

    def __init__(
        self,
        sq_norms: torch.Tensor,
        dtype: torch.dtype,
        clipped: Callable[[torch.Tensor], list[tuple[nn.Parameter, torch.Tensor]]],
    ) -> None:
        self.sq_norms = sq_norms
        self.dtype = dtype
        self.clipped = clipped


def _trainable(module: nn.Module, name: str) -> nn.Parameter | None:
    p = getattr(module, name, None)
    return p if isinstance(p, nn.Parameter) and p.requires_grad else None


def _prepare(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> _Prepared:
    if isinstance(module, nn.Conv2d):
        return _prepare_conv(module, a, g)
    if isinstance(module, nn.Linear):
        return _prepare_linear(module, a, g)
    raise ConfigError(f"unsupported layer {type(module).__name__}")  # excluded by _layers


def _prepare_linear(module: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> _Prepared:
    weight, bias = _trainable(module, "weight"), _trainable(module, "bias")
    batch = a.shape[0]
    a3 = a.reshape(batch, -1, a.shape[-1])  # (B, T, d)
    g3 = g.reshape(batch, -1, g.shape[-1])  # (B, T, p)
    steps = a3.shape[1]
    sq = torch.zeros(batch, dtype=a.dtype, device=a.device)
    per_example: torch.Tensor | None = None
    if weight is not None:
        if steps == 1:
            sq = sq + a3[:, 0].pow(2).sum(1) * g3[:, 0].pow(2).sum(1)
        elif 2 * steps * steps < weight.numel():
            gram_a = torch.bmm(a3, a3.transpose(1, 2))
            gram_g = torch.bmm(g3, g3.transpose(1, 2))
            sq = sq + (gram_a * gram_g).sum((1, 2))
        else:
            per_example = torch.bmm(g3.transpose(1, 2), a3)  # (B, p, d)
            sq = sq + per_example.pow(2).sum((1, 2))
    bias_sum = g3.sum(1) if bias is not None else None  # (B, p)
    if bias_sum is not None:
        sq = sq + bias_sum.pow(2).sum(1)

    def clipped(factor: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        out: list[tuple[nn.Parameter, torch.Tensor]] = []
        if weight is not None:
            if per_example is not None:
                w = torch.einsum("i,ipd->pd", factor, per_example)
            else:
                scaled = g3 * factor[:, None, None]
                w = scaled.reshape(-1, scaled.shape[-1]).t() @ a3.reshape(-1, a3.shape[-1])
            out.append((weight, w))
        if bias is not None and bias_sum is not None:
            out.append((bias, factor @ bias_sum))
        return out

    return _Prepared(sq, a.dtype, clipped)


def _prepare_conv(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> _Prepared:
    weight, bias = _trainable(module, "weight"), _trainable(module, "bias")
    batch = a.shape[0]
    g3 = g.reshape(batch, g.shape[1], -1)  # (B, Cout, T)
    sq = torch.zeros(batch, dtype=a.dtype, device=a.device)
    per_example: torch.Tensor | None = None
    if weight is not None:
        # One grouped weight-gradient convolution, group i = example i: torch's own conv
        # backward kernel gives the B per-example gradients (2.7x faster than unfold + bmm on
        # cnn's conv2 at batch 256, one thread).
        cin, height, width = a.shape[1], a.shape[2], a.shape[3]
        cout = g.shape[1]
        per_example = conv2d_weight(  # type: ignore[no-untyped-call]
            a.reshape(1, batch * cin, height, width),
            (batch * cout, cin, *module.kernel_size),
            g.reshape(1, batch * cout, g.shape[2], g.shape[3]),
            stride=module.stride,
            padding=module.padding,  # ints, checked in _layers
            dilation=module.dilation,
            groups=batch,
        ).reshape(batch, cout, -1)  # (B, Cout, Cin kh kw)
        sq = sq + per_example.pow(2).sum((1, 2))
    bias_sum = g3.sum(2) if bias is not None else None
    if bias_sum is not None:
        sq = sq + bias_sum.pow(2).sum(1)

    def clipped(factor: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        out: list[tuple[nn.Parameter, torch.Tensor]] = []
        if weight is not None and per_example is not None:
            w = torch.einsum("i,ipk->pk", factor, per_example)
            out.append((weight, w.reshape(weight.shape)))
        if bias is not None and bias_sum is not None:
            out.append((bias, factor @ bias_sum))
        return out

    return _Prepared(sq, a.dtype, clipped)
