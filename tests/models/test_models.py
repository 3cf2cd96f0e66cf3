import pytest
import torch
from torch import nn

from datapruning.errors import ConfigError, DataPruningError, UnknownNameError
from datapruning.models import MLP, MODELS, ConvNet1D, ResNet18, ViT, build_model

# An input shape each registered model accepts, with small options for speed.
EXAMPLES = {
    "convnet1d": ((40,), {}),
    "mlp": ((40,), {}),
    "resnet18": ((3, 8, 8), {"width": 4}),
    "vit": ((40,), {"dim": 16, "depth": 1, "heads": 2}),
}


def test_registry():
    assert MODELS["convnet1d"] is ConvNet1D
    assert MODELS["mlp"] is MLP
    assert MODELS["resnet18"] is ResNet18
    assert MODELS["vit"] is ViT
    assert set(EXAMPLES) == set(MODELS)
    for name, (shape, params) in EXAMPLES.items():
        model = build_model(name, shape, 10, **params)
        assert isinstance(model, nn.Module)


def test_convnet1d_on_flat_sequences():
    torch.manual_seed(0)
    model = build_model("convnet1d", (40,), 10)
    x = torch.randn(7, 40)
    out = model(x)
    assert out.shape == (7, 10)
    # (N, L) is treated as one channel: the same as (N, 1, L).
    assert torch.allclose(out, model(x.unsqueeze(1)))


def test_convnet1d_on_channels():
    torch.manual_seed(0)
    model = build_model("convnet1d", (3, 40), 5)
    out = model(torch.randn(4, 3, 40))
    assert out.shape == (4, 5)
    assert model.features[0].in_channels == 3


def test_convnet1d_other_length_and_width():
    model = build_model("convnet1d", (100,), 4, channels=8)
    assert model(torch.randn(2, 100)).shape == (2, 4)
    assert model.features[0].out_channels == 8


def test_convnet1d_refuses_3d_inputs():
    with pytest.raises(ConfigError, match="convnet1d"):
        build_model("convnet1d", (3, 8, 8), 10)


def test_mlp():
    torch.manual_seed(0)
    model = build_model("mlp", (64,), 10)
    assert model(torch.randn(5, 64)).shape == (5, 10)
    # Image-shaped inputs are flattened.
    model = build_model("mlp", (8, 8), 3, hidden=16, depth=3)
    assert model(torch.randn(2, 8, 8)).shape == (2, 3)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (64, 16),
        (16, 16),
        (16, 16),
        (16, 3),
    ]


def test_models_are_trainable():
    torch.manual_seed(0)
    for name, (shape, params) in EXAMPLES.items():
        model = build_model(name, shape, 10, **params)
        loss = model(torch.randn(3, *shape)).sum()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())


def test_unknown_model_names_the_choices():
    with pytest.raises(UnknownNameError) as info:
        build_model("resnet9000", (40,), 10)
    message = str(info.value)
    assert "'resnet9000'" in message
    for name in MODELS:
        assert name in message


def test_unknown_option_raises_config_error():
    with pytest.raises(ConfigError) as info:
        build_model("mlp", (64,), 10, width=3)
    message = str(info.value)
    assert "'width'" in message
    assert "depth" in message
    assert "hidden" in message
    with pytest.raises(ConfigError, match="'hidden'"):
        build_model("convnet1d", (40,), 10, hidden=3)


def test_bad_option_value_raises_config_error():
    with pytest.raises(ConfigError, match="mlp"):
        build_model("mlp", (64,), 10, depth=0)
    with pytest.raises(DataPruningError):
        build_model("mlp", (64,), 10, hidden=0)
