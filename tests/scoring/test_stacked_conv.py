"""The ensemble's batched-GEMM Conv1d against vmap of torch's own conv1d."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from datapruning.scoring.stacked_conv import StackedConv1d, with_stacked_convs

MODELS = 3


def stacked_convs(seed: int, **conv) -> tuple[nn.Conv1d, dict[str, torch.Tensor]]:
    convs = []
    for k in range(MODELS):
        torch.manual_seed(seed + k)
        convs.append(nn.Conv1d(**conv).double())
    params, _ = stack_module_state(convs)
    return convs[0], {name: value.detach() for name, value in params.items()}


def run(module: nn.Module, params: dict, x: torch.Tensor, x_dim: int | None) -> torch.Tensor:
    call = torch.vmap(lambda p, xx: functional_call(module, p, (xx,)), in_dims=(0, x_dim))
    return call(params, x)


def outputs_and_grads(module, params, x, x_dim):
    params = {name: value.clone().requires_grad_() for name, value in params.items()}
    x = x.clone().requires_grad_()
    out = run(module, params, x, x_dim)
    # A loss that weights every output differently, so a misplaced gradient shows.
    (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out, {name: value.grad for name, value in params.items()}, x.grad


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
@pytest.mark.parametrize("shared_input", [False, True])
def test_matches_vmapped_conv1d(
    in_channels, out_channels, length, kernel, stride, padding, bias, shared_input
):
    conv, params = stacked_convs(
        0,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        bias=bias,
    )
    stacked = with_stacked_convs(conv)
    assert type(stacked) is StackedConv1d
    torch.manual_seed(1)
    shape = (7, in_channels, length) if shared_input else (MODELS, 7, in_channels, length)
    x = torch.randn(*shape, dtype=torch.float64)
    x_dim = None if shared_input else 0
    want_out, want_grads, want_x_grad = outputs_and_grads(conv, params, x, x_dim)
    out, grads, x_grad = outputs_and_grads(stacked, params, x, x_dim)
    torch.testing.assert_close(out, want_out)
    for name in want_grads:
        torch.testing.assert_close(grads[name], want_grads[name], msg=name)
    torch.testing.assert_close(x_grad, want_x_grad)


def test_one_unbatched_example_per_model():
    conv, params = stacked_convs(2, in_channels=2, out_channels=3, kernel_size=3, padding=1)
    x = torch.randn(MODELS, 2, 8, dtype=torch.float64)  # (C, L) per model
    torch.testing.assert_close(run(with_stacked_convs(conv), params, x, 0), run(conv, params, x, 0))


def test_outside_vmap_it_is_an_ordinary_conv1d():
    torch.manual_seed(3)
    conv = nn.Conv1d(3, 4, kernel_size=3, stride=2, padding=1).double()
    stacked = with_stacked_convs(conv)
    x = torch.randn(5, 3, 11, dtype=torch.float64, requires_grad=True)
    want = conv(x)
    want.square().sum().backward()
    want_grads = [x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone()]
    x.grad = None
    got = stacked(x)
    got.square().sum().backward()
    torch.testing.assert_close(got, want)
    for got_grad, want_grad in zip(
        [x.grad, stacked.weight.grad, stacked.bias.grad], want_grads, strict=True
    ):
        torch.testing.assert_close(got_grad, want_grad)


def test_only_plain_convs_are_swapped_and_the_model_is_left_alone():
    model = nn.Sequential(
        nn.Conv1d(4, 4, 3, padding=1),
        nn.Conv1d(4, 4, 3, groups=2),
        nn.Conv1d(4, 4, 3, dilation=2),
        nn.Conv1d(4, 4, 3, padding="same"),
        nn.Conv1d(4, 4, 3, padding=1, padding_mode="circular"),
        nn.Conv2d(4, 4, 3),
    )
    original = copy.deepcopy(model)
    stacked = with_stacked_convs(model)
    assert [type(m) for m in stacked] == [
        StackedConv1d,
        nn.Conv1d,
        nn.Conv1d,
        nn.Conv1d,
        nn.Conv1d,
        nn.Conv2d,
    ]
    assert all(type(m) is type(o) for m, o in zip(model, original, strict=True))
    assert stacked.state_dict().keys() == model.state_dict().keys()
