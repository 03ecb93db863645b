from __future__ import annotations

import pytest
import torch
from torch import nn

from fl_core import models as models_module
from fl_core.errors import ConfigError
from fl_core.models import TanhCnn, create_model, model_names, register_model


def fashion_model(name: str) -> nn.Module:
    return create_model(name, input_shape=(1, 28, 28), num_classes=10)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_tanh_cnn_is_the_26010_parameter_tf_privacy_cnn():
    # Execute
    model = fashion_model("tanh_cnn")
    # Assert: the count and every layer's geometry of the TF-Privacy tutorial
    assert num_params(model) == 26_010
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "conv1.weight": (16, 1, 8, 8),
        "conv1.bias": (16,),
        "conv2.weight": (32, 16, 4, 4),
        "conv2.bias": (32,),
        "fc1.weight": (32, 512),
        "fc1.bias": (32,),
        "fc2.weight": (10, 32),
        "fc2.bias": (10,),
    }
    assert isinstance(model, TanhCnn)
    assert (model.conv1.stride, model.conv1.padding) == ((2, 2), (2, 2))
    assert (model.conv2.stride, model.conv2.padding) == ((2, 2), (0, 0))


@pytest.mark.parametrize(
    ("name", "shape", "classes", "params"),
    [
        ("cnn", (1, 28, 28), 10, 105_866),
        ("cnn", (1, 8, 8), 10, 13_706),
        ("cnn", (3, 32, 32), 10, 136_874),
        ("tanh_cnn", (1, 28, 28), 10, 26_010),
        ("mlp", (1, 28, 28), 10, 109_386),
        ("mlp", (10,), 1, 9_729),
        ("logreg", (30,), 2, 62),
        ("logreg", (1, 8, 8), 10, 650),
    ],
)
def test_output_shapes_and_parameter_counts(name, shape, classes, params):
    model = create_model(name, input_shape=shape, num_classes=classes)
    out = model(torch.zeros(5, *shape))
    assert out.shape == (5, classes)
    assert out.dtype == torch.float32
    assert num_params(model) == params


# torch warns that Opacus' full backward hooks fire although the input needs no gradient: benign.
@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
@pytest.mark.parametrize("name", ["cnn", "tanh_cnn", "mlp", "logreg"])
def test_models_are_opacus_compatible(name):
    # Prepare
    from opacus import GradSampleModule
    from opacus.validators import ModuleValidator

    model = fashion_model(name)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    # Execute: Opacus validates the modules and computes per-example gradients
    errors = ModuleValidator.validate(model, strict=False)
    wrapped = GradSampleModule(model)
    nn.functional.cross_entropy(wrapped(x), y).backward()
    # Assert
    assert errors == []
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for p in model.parameters():
        assert p.grad_sample.shape == (4, *p.shape)  # type: ignore[attr-defined]
    wrapped._close()


def test_initialisation_follows_the_torch_seed():
    def make():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            return fashion_model("cnn")

    a, b = make(), make()
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("cnn", (28, 28), "channels, height, width"),
        ("cnn", (1, 3, 28), "height and width >= 4"),
        ("tanh_cnn", (1, 32, 32), "needs 28x28 images"),
        ("mlp", (), "non-empty input_shape"),
        ("logreg", (0,), "positive sizes"),
    ],
)
def test_bad_input_shapes_are_rejected(name, shape, message):
    with pytest.raises(ConfigError, match=message):
        create_model(name, input_shape=shape, num_classes=2)


def test_unknown_model_and_bad_class_count():
    with pytest.raises(ConfigError, match="unknown model 'resnet'.*cnn"):
        fashion_model("resnet")
    with pytest.raises(ConfigError, match="num_classes must be >= 1"):
        create_model("logreg", input_shape=(3,), num_classes=0)


def test_register_model_is_explicit(monkeypatch):
    monkeypatch.setattr(models_module, "_MODELS", dict(models_module._MODELS))

    def linear(*, input_shape, num_classes):
        return nn.Linear(input_shape[0], num_classes)

    assert "linear" not in model_names()
    register_model("linear", linear)
    assert isinstance(create_model("linear", input_shape=(3,), num_classes=2), nn.Linear)
    with pytest.raises(ConfigError, match="already registered"):
        register_model("linear", linear)
    assert set(model_names()) >= {"cnn", "tanh_cnn", "mlp", "logreg", "linear"}
