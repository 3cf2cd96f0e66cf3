import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datapruning.errors import ConfigError
from datapruning.models import ViT, build_model

SMALL = {"dim": 16, "depth": 2, "heads": 2, "mlp_ratio": 2.0}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_params(channels, patch, tokens, dim, depth, mlp_ratio, classes, conv_dims):
    hidden = round(dim * mlp_ratio)
    embed = channels * patch**conv_dims * dim + dim
    cls_and_pos = dim + (tokens + 1) * dim
    # per layer: qkv + out proj, two LayerNorms, two MLP linears
    layer = (3 * dim * dim + 3 * dim) + (dim * dim + dim) + 4 * dim
    layer += dim * hidden + hidden + hidden * dim + dim
    head = 2 * dim + dim * classes + classes
    return embed + cls_and_pos + depth * layer + head


def test_image_vit_shapes_and_size():
    model = build_model("vit", (3, 32, 32), 10, patch_size=4, **SMALL)
    assert isinstance(model, ViT)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.pos_embed.shape == (1, 64 + 1, 16)
    assert n_params(model) == expected_params(3, 4, 64, 16, 2, 2.0, 10, conv_dims=2)


def test_default_vit_is_small():
    assert 0.5e6 < n_params(build_model("vit", (3, 32, 32), 10)) < 1.5e6


def test_sequence_vit_patches_along_the_length():
    model = build_model("vit", (40,), 10, patch_size=4, **SMALL)
    assert isinstance(model.patch_embed, nn.Conv1d)
    x = torch.randn(5, 40)
    out = model(x)
    assert out.shape == (5, 10)
    assert torch.allclose(out, model(x.unsqueeze(1)), atol=1e-6)
    assert n_params(model) == expected_params(1, 4, 10, 16, 2, 2.0, 10, conv_dims=1)
    model.eval()  # torch's fused inference path gives the same answer
    with torch.no_grad():
        assert torch.allclose(model(x), out, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "params", "fragment"),
    [
        ((3, 30, 30), {"patch_size": 4}, "patch_size 4 must divide"),
        ((3, 32, 32), {"dim": 10, "heads": 4}, "multiple of heads"),
        ((3, 32, 32), {"depth": 0}, "must be positive"),
        ((2, 3, 8, 8), {}, "expects"),
        ((3, 32, 32), {"window": 7}, "'window'"),
    ],
)
def test_bad_options_are_config_errors(shape, params, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_model("vit", shape, 10, **params)


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    model = build_model("vit", (3, 8, 8), 4, patch_size=4, **SMALL)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
