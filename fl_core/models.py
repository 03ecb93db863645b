"""Model architectures behind an explicit registry (:func:`create_model`).

Built-in models (all Opacus-compatible: only ``Conv2d``, ``Linear``, pooling and element-wise
activations, no BatchNorm, so DP-SGD can compute per-example gradients):

=============  ==========================================================================  ========
name           architecture                                                                params
=============  ==========================================================================  ========
``cnn``        conv 16x3x3 pad 1, ReLU, maxpool 2; conv 32x3x3 pad 1, ReLU, maxpool 2;     105,866
               fc -> 64, ReLU; fc -> classes
``tanh_cnn``   the TF-Privacy tutorial CNN with tanh: conv 16x8x8 stride 2 pad 2, maxpool   26,010
               2 stride 1; conv 32x4x4 stride 2, maxpool 2 stride 1; fc 512 -> 32; fc 32 ->
               classes
``mlp``        flatten; fc -> 128, ReLU; fc -> 64, ReLU; fc -> classes                     109,386
``logreg``     flatten; fc -> classes (multinomial logistic regression)                        62
=============  ==========================================================================  ========

Parameter counts are for Fashion-MNIST (1x28x28, 10 classes), and for ``logreg`` for breast
cancer (30 features, 2 classes).

``cnn`` is the model of the Fashion-MNIST FedAvg example: 10 clients with Dirichlet(0.5) label
skew, one local epoch of SGD (lr 0.05, momentum 0.9, batch 32) per round, reach 85 % test
accuracy after 4 rounds. ``tanh_cnn`` is the model of the
DP-SGD utility anchor (Papernot et al., "Tempered Sigmoid Activations for Deep Learning with
Differential Privacy", AAAI 2021; Tramer and Boneh, "Differentially Private Learning Needs Better
Features", ICLR 2021).

Models output logits (classification) or one value per example (regression, ``num_classes=1``).
Parameters are created by torch's default initialisers from torch's global generator; seed it
(``torch.manual_seed`` inside ``torch.random.fork_rng()``) for reproducible weights, as
:class:`fl_core.client.trainer.TorchTrainer` does.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn

from fl_core.errors import ConfigError

__all__ = ["MLP_HIDDEN", "ModelFactory", "create_model", "model_names", "register_model"]

MLP_HIDDEN = (128, 64)
"""Hidden layer widths of the ``mlp`` model."""


class ModelFactory(Protocol):
    """Builds a fresh, randomly initialised model for examples of ``input_shape``."""

    def __call__(self, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """Create the model."""
        ...


class SmallCnn(nn.Module):
    """Two 3x3 convolutions with max pooling, then two fully connected layers (ReLU)."""

    def __init__(self, *, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = _image_shape("cnn", input_shape, min_side=4)
        self.conv1 = nn.Conv2d(channels, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * (height // 4) * (width // 4), 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(batch, num_classes)``."""
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        out: torch.Tensor = self.fc2(x)
        return out


class TanhCnn(nn.Module):
    """The CNN of the TensorFlow Privacy tutorial with tanh activations (26,010 parameters)."""

    def __init__(self, *, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = _image_shape("tanh_cnn", input_shape, min_side=28)
        if (height, width) != (28, 28):
            raise ConfigError(f"model 'tanh_cnn' needs 28x28 images, got input_shape {input_shape}")
        self.conv1 = nn.Conv2d(channels, 16, kernel_size=8, stride=2, padding=2)
        self.pool = nn.MaxPool2d(2, stride=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=4, stride=2)
        self.fc1 = nn.Linear(32 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(batch, num_classes)``."""
        x = self.pool(torch.tanh(self.conv1(x)))  # 16 x 13 x 13 -> 16 x 12 x 12
        x = self.pool(torch.tanh(self.conv2(x)))  # 32 x 5 x 5 -> 32 x 4 x 4
        x = torch.tanh(self.fc1(torch.flatten(x, 1)))
        out: torch.Tensor = self.fc2(x)
        return out


class Mlp(nn.Module):
    """A fully connected network with ReLU hidden layers of widths :data:`MLP_HIDDEN`."""

    def __init__(self, *, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        widths = (_num_features("mlp", input_shape), *MLP_HIDDEN)
        self.hidden = nn.ModuleList(
            nn.Linear(w_in, w_out) for w_in, w_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.out = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (or predictions) of shape ``(batch, num_classes)``."""
        x = torch.flatten(x, 1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        out: torch.Tensor = self.out(x)
        return out


class LogReg(nn.Module):
    """Multinomial logistic regression (linear regression for ``num_classes=1``)."""

    def __init__(self, *, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(_num_features("logreg", input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (or predictions) of shape ``(batch, num_classes)``."""
        out: torch.Tensor = self.linear(torch.flatten(x, 1))
        return out


def _image_shape(
    model: str, input_shape: tuple[int, ...], *, min_side: int
) -> tuple[int, int, int]:
    if len(input_shape) != 3 or min(input_shape[1:]) < min_side or input_shape[0] < 1:
        raise ConfigError(
            f"model {model!r} needs images of shape (channels, height, width) with height and "
            f"width >= {min_side}, got input_shape {input_shape}"
        )
    return input_shape[0], input_shape[1], input_shape[2]


def _num_features(model: str, input_shape: tuple[int, ...]) -> int:
    if not input_shape or min(input_shape) < 1:
        raise ConfigError(
            f"model {model!r} needs a non-empty input_shape of positive sizes, got {input_shape}"
        )
    return math.prod(input_shape)


_MODELS: dict[str, ModelFactory] = {
    "cnn": SmallCnn,
    "tanh_cnn": TanhCnn,
    "mlp": Mlp,
    "logreg": LogReg,
}


def register_model(name: str, factory: ModelFactory, *, replace: bool = False) -> None:
    """Make ``factory`` available to :func:`create_model` as ``name``.

    Args:
        name: the registry name (non-empty).
        factory: called as ``factory(input_shape=..., num_classes=...)``; must return a module
            that Opacus can wrap if the model is to be trained with DP-SGD.
        replace: allow replacing an existing entry.

    Raises:
        ConfigError: ``name`` is empty, or already registered and ``replace`` is false.
    """
    if not name:
        raise ConfigError("model name must be non-empty")
    if name in _MODELS and not replace:
        raise ConfigError(f"model {name!r} is already registered (pass replace=True)")
    _MODELS[name] = factory


def model_names() -> tuple[str, ...]:
    """Return the registered model names, sorted."""
    return tuple(sorted(_MODELS))


def create_model(name: str, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Create a freshly initialised model.

    Args:
        name: a name from :func:`model_names`.
        input_shape: shape of one example, e.g. ``(1, 28, 28)`` or ``(30,)``.
        num_classes: number of outputs: classes, or 1 for regression.

    Returns:
        The model, in training mode, with float32 parameters on the CPU.

    Raises:
        ConfigError: unknown name, ``num_classes < 1``, or an input shape the model cannot take.
    """
    factory = _MODELS.get(name)
    if factory is None:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(model_names())}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    return factory(input_shape=tuple(int(d) for d in input_shape), num_classes=num_classes)
