"""Conv1d of K stacked models as batched GEMMs: the scoring ensemble's convolution.

Run as K separate convolutions (or the grouped convolution ``vmap`` makes of
them), the small Conv1d layers of scoring models go through oneDNN at a
fraction of the speed of a GEMM of the same size on a CPU. Here the K
convolutions are three batched matrix products on a channels-last layout,
(K, B, L, C) in memory:

- forward: unfold the zero-padded input into windows (K, B·L_out, k·C) and
  multiply by the weights laid out as (K, k·C, C_out);
- weight gradient: windowsᵀ @ grad_out;
- input gradient: grad_out @ weightsᵀ, folded back onto the input positions.

Outputs are returned as (K, B, C_out, L_out) views of the channels-last
result, so the next convolution reads its input without a copy. A ReLU that
follows the convolution can run inside it (``relu=True``): clamped in place on
the GEMM's output, and masked in the backward on the same layout, instead of
an elementwise pass over a transposed view each way.

:class:`StackedConv1dFunction` is used by :class:`datapruning.scoring.folded.FoldedConv1d`.
"""

from __future__ import annotations

from typing import Any

import torch
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


class StackedConv1dFunction(torch.autograd.Function):
    """Conv1d (then ReLU if ``relu``) of K models: x (K, B, C, L), weight (K, O, C, k), bias (K, O)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int,
        padding: int,
        relu: bool = False,
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
        if relu:
            out.clamp_min_(0)
        ctx.save_for_backward(windows, weight_matrix, out if relu else None)
        ctx.geometry = (stride, padding, length, channels, kernel, bias is not None, relu)
        return out.view(k_models, batch, out_length, out_channels).transpose(2, 3)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        windows, weight_matrix, out = ctx.saved_tensors
        stride, padding, length, channels, kernel, has_bias, relu = ctx.geometry
        k_models, batch, out_channels, out_length = grad_out.shape
        grad = grad_out.transpose(2, 3).reshape(k_models, batch * out_length, out_channels)
        if relu:
            grad = torch.ops.aten.threshold_backward(grad, out, 0)
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
        return grad_x, grad_weight, grad_bias, None, None, None


def supports_stacking(conv: nn.Module) -> bool:
    """Plain zero-padded Conv1d: no groups, no dilation, padding given as a number."""
    return (
        type(conv) is nn.Conv1d
        and conv.groups == 1
        and conv.dilation == (1,)
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
    )
