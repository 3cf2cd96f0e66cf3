"""K models of one architecture as one module on folded batches: the ensemble's fast path.

``vmap`` over ``functional_call`` runs K small models at once, but it adds
dispatch work to every op of every step, and turns each Conv1d into a grouped
convolution that oneDNN runs slowly on a CPU. Here the K models' batches are
concatenated along the batch dimension, (K·B, ...), and passed through a copy
of the model in which each layer that holds parameters splits the batch back
into (K, B, ...) and applies model k's weights to block k with batched GEMMs:

- :class:`FoldedLinear`: one ``baddbmm`` over (K, B·…, in) rows;
- :class:`FoldedConv1d`: :class:`~datapruning.scoring.stacked_conv.StackedConv1dFunction`
  (a ReLU right after it in a ``Sequential`` runs inside it).

Everything else (activations, flattening, pooling, the model's own
``forward``) runs unchanged on the folded batch, which is right as long as it
treats every example on its own. :class:`~datapruning.scoring.ensemble.Ensemble`
checks that on its first inputs (the folded model must reproduce vmap's
output) and falls back to vmap for a model that does not.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from datapruning.scoring.stacked_conv import StackedConv1dFunction, supports_stacking


class FoldedLinear(nn.Linear):
    """``nn.Linear`` with weight (K, out, in) and bias (K, out), on inputs (K·B, ..., in)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        k_models = self.weight.shape[0]
        rows = input.reshape(k_models, -1, input.shape[-1])  # (K, B·…, in)
        if self.out_features < self.in_features:
            # A narrow output (a classifier): MKL's batched GEMM is 2-4x faster
            # computing it, and its weight gradient, transposed: (K, out, B·…).
            bias = None if self.bias is None else self.bias.unsqueeze(2)
            out = _baddbmm(bias, self.weight, rows.transpose(1, 2)).transpose(1, 2)
        else:
            bias = None if self.bias is None else self.bias.unsqueeze(1)
            out = _baddbmm(bias, rows, self.weight.transpose(1, 2))
        return out.reshape(*input.shape[:-1], -1)


def _baddbmm(bias: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(a, b) if bias is None else torch.baddbmm(bias, a, b)


class FoldedConv1d(nn.Conv1d):
    """``nn.Conv1d`` with weight (K, out, in, k) and bias (K, out), on inputs (K·B, C, L)."""

    relu = False  # set by fold_model when a ReLU follows: it then runs inside the conv

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        k_models = self.weight.shape[0]
        out = StackedConv1dFunction.apply(
            input.unflatten(0, (k_models, -1)),
            self.weight,
            self.bias,
            self.stride[0],
            self.padding[0],
            self.relu,
        )
        return out.flatten(0, 1)


def fold_model(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` for folded batches, or None if it has layers this cannot fold.

    Foldable: every parameter belongs to an ``nn.Linear`` or a plain zero-padded
    ``nn.Conv1d``, and there are no buffers (running statistics mix the models).
    The copy has the same parameter names, so ``functional_call`` with the
    ensemble's stacked parameters runs it.
    """
    if any(True for _ in model.buffers()):
        return None
    folded = copy.deepcopy(model)
    for module in folded.modules():
        if type(module) is nn.Linear:
            module.__class__ = FoldedLinear
        elif supports_stacking(module):
            module.__class__ = FoldedConv1d
        elif any(p is not None for p in module._parameters.values()):
            return None
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if type(module[i]) is FoldedConv1d and type(module[i + 1]) is nn.ReLU:
                    module[i].relu = True
                    module[i + 1] = nn.Identity()
    return folded
