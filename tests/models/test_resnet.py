import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datapruning.config import ModelConfig, PipelineConfig
from datapruning.errors import ConfigError
from datapruning.models import ResNet18, build_model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_cifar_resnet18_shapes_and_size():
    model = build_model("resnet18", (3, 32, 32), 10)
    # The CIFAR ResNet-18 (kuangliu/pytorch-cifar) has 11,173,962 parameters.
    assert n_params(model) == 11_173_962
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_stem_keeps_the_resolution():
    model = build_model("resnet18", (3, 32, 32), 100, width=8)
    stem = model.stem[0]
    assert (stem.kernel_size, stem.stride) == ((3, 3), (1, 1))
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    # Four stages of two BasicBlocks; 32 -> 32, 16, 8, 4 spatially.
    assert len(model.blocks) == 8
    x = model.stem(torch.randn(1, 3, 32, 32))
    sizes = []
    for block in model.blocks:
        x = block(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes[1::2] == [(8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4)]
    assert model.fc.out_features == 100


def test_width_scales_parameters_quadratically():
    small, large = (n_params(build_model("resnet18", (3, 32, 32), 10, width=w)) for w in (8, 16))
    assert 3.5 < large / small < 4.1


def test_grayscale_and_other_sizes():
    model = build_model("resnet18", (28, 28), 10, width=4)
    assert model.stem[0].in_channels == 1
    assert model(torch.randn(3, 28, 28)).shape == (3, 10)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="resnet18"):
        build_model("resnet18", (40,), 10)
    with pytest.raises(ConfigError, match="width"):
        build_model("resnet18", (3, 32, 32), 10, width=0)
    with pytest.raises(ConfigError, match="'depth'"):
        build_model("resnet18", (3, 32, 32), 10, depth=34)


def test_constructible_from_config():
    cfg = PipelineConfig.model_validate({"model": {"name": "resnet18", "params": {"width": 4}}})
    assert cfg.model == ModelConfig(name="resnet18", params={"width": 4})
    model = build_model(cfg.model.name, (3, 16, 16), 10, **cfg.model.params)
    assert isinstance(model, ResNet18)


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 16, 16), 4, width=4)
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 4, (32,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
