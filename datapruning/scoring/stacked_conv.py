"""Conv1d for K stacked models as batched GEMMs: the scoring ensemble's convolution.

Under ``vmap`` over K models, ``F.conv1d`` becomes one grouped convolution
(groups = K). On a CPU, oneDNN runs those small grouped convolutions (and
their backward) at a fraction of the speed of a GEMM of the same size, which
made the batched ensemble barely faster than training the models one by one.

Here the K convolutions are written as three batched matrix products on a
channels-last layout, (K, B, L, C) in memory:

- forward: unfold the zero-padded input into windows (K, B·L_out, k·C) and
  multiply by the weights laid out as (K, k·C, C_out);
- weight gradient: windowsᵀ @ grad_out;
- input gradient: grad_out @ weightsᵀ, folded back onto the input positions.

Outputs are returned as (K, B, C_out, L_out) views of the channels-last
result, so the next convolution reads its input without a copy.

:class:`StackedConv1d` is an ``nn.Conv1d`` whose ``vmap`` rule is this path; outside
``vmap`` it is an ordinary ``nn.Conv1d``. :func:`with_stacked_convs` swaps it into a
copy of a model for the ensemble's training step.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _tap_range(
    length: int, stride: int, padding: int, out_length: int, tap: int
) -> tuple[int, int, int]:
    """Output positions [lo, hi) whose tap ``tap`` reads a real (not padded) input, and its first input."""
    lo = max(0, -(-(padding - tap) // stride))  # ceil((padding - tap) / stride)
    hi = min(out_length, (length - 1 + padding - tap) // stride + 1)
    return lo, max(lo, hi), lo * stride + tap - padding


def _unfold(
    x: torch.Tensor, kernel: int, stride: int, padding: int, out_length: int
) -> torch.Tensor:
    """(K, B, L, C) channels-last input -> (K, B, L_out, kernel, C) zero-padded windows."""
    k_models, batch, length, channels = x.shape
    windows = x.new_empty(k_models, batch, out_length, kernel, channels)
    for tap in range(kernel):
        lo, hi, first = _tap_range(length, stride, padding, out_length, tap)
        if hi > lo:
            windows[:, :, lo:hi, tap] = x[:, :, first : first + stride * (hi - lo - 1) + 1 : stride]
        if lo > 0:
            windows[:, :, :lo, tap].zero_()
        if hi < out_length:
            windows[:, :, hi:, tap].zero_()
    return windows


class _StackedConv1dFunction(torch.autograd.Function):
    """Conv1d of K models on stacked tensors: x (K, B, C, L), weight (K, O, C, k), bias (K, O)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int,
        padding: int,
    ) -> torch.Tensor:
        k_models, batch, channels, length = x.shape
        out_channels, kernel = weight.shape[1], weight.shape[3]
        out_length = (length + 2 * padding - kernel) // stride + 1
        windows = _unfold(x.transpose(2, 3), kernel, stride, padding, out_length)
        windows = windows.view(k_models, batch * out_length, kernel * channels)
        # (K, O, C, k) -> (K, k·C, O), matching the windows' (tap, channel) order.
        weight_matrix = weight.permute(0, 3, 2, 1).reshape(
            k_models, kernel * channels, out_channels
        )
        if bias is None:
            out = torch.bmm(windows, weight_matrix)
        else:
            out = torch.baddbmm(bias.unsqueeze(1), windows, weight_matrix)
        ctx.save_for_backward(windows, weight_matrix)
        ctx.geometry = (stride, padding, length, channels, kernel, bias is not None)
        return out.view(k_models, batch, out_length, out_channels).transpose(2, 3)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        windows, weight_matrix = ctx.saved_tensors
        stride, padding, length, channels, kernel, has_bias = ctx.geometry
        k_models, batch, out_channels, out_length = grad_out.shape
        grad = grad_out.transpose(2, 3).reshape(k_models, batch * out_length, out_channels)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(windows.transpose(1, 2), grad)
            grad_weight = grad_weight.view(k_models, kernel, channels, out_channels).permute(
                0, 3, 2, 1
            )
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(1)
        if ctx.needs_input_grad[0]:
            grad_windows = torch.bmm(grad, weight_matrix.transpose(1, 2))
            grad_windows = grad_windows.view(k_models, batch, out_length, kernel, channels)
            grad_x = grad_out.new_zeros(k_models, batch, length, channels)
            for tap in range(kernel):
                lo, hi, first = _tap_range(length, stride, padding, out_length, tap)
                if hi > lo:
                    grad_x[:, :, first : first + stride * (hi - lo - 1) + 1 : stride] += (
                        grad_windows[:, :, lo:hi, tap]
                    )
            grad_x = grad_x.transpose(2, 3)
        return grad_x, grad_weight, grad_bias, None, None


def _stacked(value: torch.Tensor | None, dim: int | None, size: int) -> torch.Tensor | None:
    if value is None:
        return None
    return value.movedim(dim, 0) if dim is not None else value.expand(size, *value.shape)


class _Conv1dFunction(torch.autograd.Function):
    """``F.conv1d`` whose vmap rule is :class:`_StackedConv1dFunction`."""

    @staticmethod
    def forward(
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int,
        padding: int,
    ) -> torch.Tensor:
        return F.conv1d(x, weight, bias, stride, padding)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        x, weight, bias, stride, padding = inputs
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, bias is not None)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, has_bias = ctx.conv
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_out,
            x,
            weight,
            [weight.shape[0]] if has_bias else None,
            [stride],
            [padding],
            [1],
            False,
            [0],
            1,
            [
                ctx.needs_input_grad[0],
                ctx.needs_input_grad[1],
                has_bias and ctx.needs_input_grad[2],
            ],
        )
        return grad_x, grad_weight, grad_bias, None, None

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int,
        padding: int,
    ) -> tuple[torch.Tensor, int]:
        size = info.batch_size
        x, weight = _stacked(x, in_dims[0], size), _stacked(weight, in_dims[1], size)
        unbatched_input = x.dim() == 3  # (K, C, L): one example per model
        if unbatched_input:
            x = x.unsqueeze(1)
        out = _StackedConv1dFunction.apply(
            x, weight, _stacked(bias, in_dims[2], size), stride, padding
        )
        return (out.squeeze(1) if unbatched_input else out), 0


class StackedConv1d(nn.Conv1d):
    """An ``nn.Conv1d`` that ``vmap`` over stacked models runs as batched GEMMs."""

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return _Conv1dFunction.apply(input, weight, bias, self.stride[0], self.padding[0])


def supports_stacking(conv: nn.Module) -> bool:
    """Plain zero-padded Conv1d: no groups, no dilation, padding given as a number."""
    return (
        type(conv) is nn.Conv1d
        and conv.groups == 1
        and conv.dilation == (1,)
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
    )


def with_stacked_convs(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose plain Conv1d layers are :class:`StackedConv1d` (same parameters)."""
    stacked = copy.deepcopy(model)
    for module in stacked.modules():
        if supports_stacking(module):
            module.__class__ = StackedConv1d
    return stacked
