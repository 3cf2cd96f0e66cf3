"""The ensemble's folded layers (K models' batches as one) against vmap of torch's own layers."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from datapruning.scoring.folded import FoldedConv1d, FoldedLinear, fold_model

MODELS = 3


def stacked(seed: int, make) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    modules = []
    for k in range(MODELS):
        torch.manual_seed(seed + k)
        modules.append(make().double())
    params, _ = stack_module_state(modules)
    return modules[0], {name: value.detach() for name, value in params.items()}


def outputs_and_grads(run, params, x):
    params = {name: value.clone().requires_grad_() for name, value in params.items()}
    x = x.clone().requires_grad_()
    out = run(params, x)
    # A loss that weights every output differently, so a misplaced gradient shows.
    (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out, {name: value.grad for name, value in params.items()}, x.grad


def vmapped(module):
    return torch.vmap(lambda p, xx: functional_call(module, p, (xx,)))


def folded(module):
    def run(params, x):
        out = functional_call(module, params, (x.flatten(0, 1),))
        return out.unflatten(0, (MODELS, -1))

    return run


def assert_same(module, folded_module, params, x):
    want_out, want_grads, want_x_grad = outputs_and_grads(vmapped(module), params, x)
    out, grads, x_grad = outputs_and_grads(folded(folded_module), params, x)
    torch.testing.assert_close(out, want_out)
    for name in want_grads:
        torch.testing.assert_close(grads[name], want_grads[name], msg=name)
    torch.testing.assert_close(x_grad, want_x_grad)


@pytest.mark.parametrize(
    "in_channels,out_channels,length,kernel,stride,padding",
    [
        (1, 4, 40, 5, 2, 1),  # convnet1d's first layer
        (4, 6, 19, 3, 2, 1),
        (3, 5, 10, 3, 1, 0),
        (2, 3, 9, 4, 3, 2),
        (2, 2, 5, 3, 2, 3),  # padding wider than the kernel: some windows are all padding
        (3, 2, 3, 5, 1, 1),  # kernel longer than the input
    ],
)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_conv1d_matches_vmapped_conv1d(
    in_channels, out_channels, length, kernel, stride, padding, bias, relu
):
    def make():
        conv = nn.Conv1d(
            in_channels, out_channels, kernel, stride=stride, padding=padding, bias=bias
        )
        return nn.Sequential(conv, nn.ReLU()) if relu else conv

    module, params = stacked(0, make)
    folded_module = fold_model(module)
    convs = [m for m in folded_module.modules() if isinstance(m, nn.Conv1d)]
    assert [type(m) for m in convs] == [FoldedConv1d] and convs[0].relu is relu
    torch.manual_seed(1)
    x = torch.randn(MODELS, 7, in_channels, length, dtype=torch.float64)
    assert_same(module, folded_module, params, x)


@pytest.mark.parametrize("shape", [(7,), (7, 4)], ids=["rows", "sequence"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("features", [(5, 3), (3, 5)], ids=["narrowing", "widening"])
def test_linear_matches_vmapped_linear(shape, bias, features):
    module, params = stacked(2, lambda: nn.Linear(*features, bias=bias))
    folded_module = fold_model(module)
    assert type(folded_module) is FoldedLinear
    x = torch.randn(MODELS, *shape, features[0], dtype=torch.float64)
    assert_same(module, folded_module, params, x)


def test_a_small_network_matches_vmap():
    def make():
        return nn.Sequential(
            nn.Conv1d(2, 4, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(4, 4, 3, padding=1),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(4 * 6, 8),
            nn.ReLU(),
            nn.Linear(8, 3),
        )

    module, params = stacked(4, make)
    folded_module = fold_model(module)
    assert [type(m) for m in folded_module] == [
        FoldedConv1d,
        nn.Identity,  # its ReLU runs inside the conv
        FoldedConv1d,
        nn.Tanh,
        nn.Flatten,
        FoldedLinear,
        nn.ReLU,
        FoldedLinear,
    ]
    x = torch.randn(MODELS, 5, 2, 12, dtype=torch.float64)
    assert_same(module, folded_module, params, x)


def test_outside_a_fold_the_fused_conv_is_conv_then_relu():
    from datapruning.scoring.stacked_conv import StackedConv1dFunction

    torch.manual_seed(3)
    conv = nn.Conv1d(3, 4, kernel_size=3, stride=2, padding=1).double()
    x = torch.randn(1, 5, 3, 11, dtype=torch.float64)
    got = StackedConv1dFunction.apply(x, conv.weight[None], conv.bias[None], 2, 1, True)
    torch.testing.assert_close(got[0], F.relu(conv(x[0])))


def test_only_plain_layers_fold_and_the_model_is_left_alone():
    model = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4, 4))
    original = copy.deepcopy(model)
    folded_module = fold_model(model)
    assert [type(m) for m in model] == [type(m) for m in original]
    assert folded_module.state_dict().keys() == model.state_dict().keys()
    for unfoldable in [
        nn.Conv1d(4, 4, 3, groups=2),
        nn.Conv1d(4, 4, 3, dilation=2),
        nn.Conv1d(4, 4, 3, padding="same"),
        nn.Conv1d(4, 4, 3, padding=1, padding_mode="circular"),
        nn.Conv2d(4, 4, 3),
        nn.LayerNorm(4),
        nn.BatchNorm1d(4),  # buffers: running statistics
    ]:
        assert fold_model(nn.Sequential(nn.Linear(4, 4), unfoldable)) is None, unfoldable
