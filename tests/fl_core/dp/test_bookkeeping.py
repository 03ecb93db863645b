"""Book-keeping clipping (issue 14, DP-SGD cost) against the plain per-example definition."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from torch import nn

from fl_core.dp.bookkeeping import BookKeeper, supports
from fl_core.errors import ConfigError


class _Tiny(nn.Module):
    """Conv (padding, stride), pooling, a linear layer on 3-D input, and a plain linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, kernel_size=2, stride=2, bias=False)
        self.seq = nn.Linear(4, 5)  # applied to (B, T, 4): T = 9 spatial positions
        self.wide = nn.Linear(15, 6)  # applied to (B, 3, 15): 2 T^2 = 18 < 90, the ghost norm
        self.head = nn.Linear(18, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        h = torch.tanh(self.conv2(h))  # (B, 4, 3, 3)
        h = torch.relu(self.seq(h.flatten(2).transpose(1, 2)))  # (B, 9, 5)
        h = torch.relu(self.wide(h.reshape(len(h), 3, 15)))  # (B, 3, 6)
        return self.head(h.flatten(1))


def _reference(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each example's gradient on its own, clipped to ``clip``, summed (in float64)."""
    params = [p for p in model.parameters() if p.requires_grad]
    sums = [torch.zeros(p.shape, dtype=torch.float64) for p in params]
    norms = []
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum")
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum(g.double().pow(2).sum() for g in grads))
        norms.append(norm)
        factor = min(1.0, clip / float(norm))
        for total, g in zip(sums, grads, strict=True):
            total += factor * g.double()
    return sums, torch.stack(norms)


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 6),
    clip=st.sampled_from([1e-3, 0.05, 0.5, 100.0]),
    seed=st.integers(0, 2**16),
)
def test_clipped_sum_is_the_per_example_definition(batch: int, clip: float, seed: int) -> None:
    # Prepare
    torch.manual_seed(seed)
    model = _Tiny()
    x = torch.randn(batch, 2, 6, 6)
    y = torch.randint(0, 3, (batch,))
    keeper = BookKeeper(model)
    # Execute
    got = keeper.clipped_sum(x, y, loss_fn=nn.CrossEntropyLoss(reduction="sum"), max_grad_norm=clip)
    want, norms = _reference(model, x, y, clip)
    # Assert: same norms, same clipped sum, and the sum's norm within batch * C
    torch.testing.assert_close(got.norms, norms, rtol=1e-4, atol=1e-7)
    for g, w in zip(got.grads, want, strict=True):
        torch.testing.assert_close(g.double(), w, rtol=1e-3, atol=1e-6 * clip)
    total = torch.sqrt(sum(g.double().pow(2).sum() for g in got.grads))
    assert float(total) <= batch * clip
    keeper.close()


def test_each_clipped_contribution_is_within_the_bound() -> None:
    # One example with a huge gradient: its contribution is exactly at most C, never above.
    torch.manual_seed(0)
    model = _Tiny()
    x = 1e3 * torch.randn(1, 2, 6, 6)
    y = torch.tensor([1])
    got = BookKeeper(model).clipped_sum(
        x, y, loss_fn=nn.CrossEntropyLoss(reduction="sum"), max_grad_norm=0.1
    )
    assert float(got.norms[0]) > 1.0
    norm = float(torch.sqrt(sum(g.double().pow(2).sum() for g in got.grads)))
    assert 0.0999 < norm <= 0.1


def test_frozen_parameters_are_left_out() -> None:
    torch.manual_seed(0)
    model = _Tiny()
    model.conv1.weight.requires_grad_(False)
    x, y = torch.randn(3, 2, 6, 6), torch.randint(0, 3, (3,))
    got = BookKeeper(model).clipped_sum(
        x, y, loss_fn=nn.CrossEntropyLoss(reduction="sum"), max_grad_norm=0.5
    )
    want, _ = _reference(model, x, y, 0.5)
    assert len(got.grads) == len(want) == 8
    for g, w in zip(got.grads, want, strict=True):
        torch.testing.assert_close(g.double(), w, rtol=1e-3, atol=1e-7)


def test_unsupported_layers_are_refused_with_a_clear_error() -> None:
    odd = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    assert not supports(odd)
    frozen = nn.Linear(3, 3).requires_grad_(False)
    assert not supports(frozen)  # nothing to train: AUTO falls back to Opacus's modes
    with pytest.raises(ConfigError, match="LayerNorm"):
        BookKeeper(odd)
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ConfigError, match="groups=1"):
        BookKeeper(grouped)
    shared = nn.Linear(3, 3)
    with pytest.raises(ConfigError, match="exactly once"):
        BookKeeper(nn.Sequential(shared, shared)).clipped_sum(
            torch.randn(2, 3),
            torch.tensor([0, 1]),
            loss_fn=nn.CrossEntropyLoss(reduction="sum"),
            max_grad_norm=1.0,
        )
