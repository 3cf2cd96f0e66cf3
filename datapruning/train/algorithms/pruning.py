"""Weight sparsity as an algorithm: gradual magnitude pruning, one-shot N:M, dynamic N:M.

The pruners themselves (:mod:`datapruning.train.sparsity`) work in any loop:
call ``pruner.step(t, optimizer)`` after each optimizer step. This adapter is
how the project's loop calls them. ``train.sparsity`` picks the pruner
(:func:`~datapruning.train.sparsity.build_pruner`): :class:`~datapruning.train.sparsity.MagnitudePruner`
for GMP (global or per layer, Zhu & Gupta's cubic schedule, optional rewinding)
and one-shot N:M; :class:`~datapruning.train.sparsity.DynamicNMPruner` for N:M
recomputed every step with SR-STE. A pruner that keeps pruned weights at exact
zeros hands the optimizer its masks, so the optimizer is a masked one
(:mod:`datapruning.kernels.masked_optim`, fused on CUDA); dynamic N:M keeps dense
weights and a plain optimizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from datapruning.kernels import use_triton
from datapruning.train.algorithms.base import Algorithm, Trainer
from datapruning.train.sparsity import Pruner, build_pruner, is_masked
from datapruning.train.step import StepResult


class Pruning(Algorithm):
    """Runs a pruner's schedule after every optimizer step of the loop."""

    name = "pruning"

    def __init__(self, pruner: Pruner) -> None:
        self.pruner = pruner
        self.optimizer: torch.optim.Optimizer | None = None
        self.plan: Any = None

    def optimizer_masks(self) -> Mapping[Tensor, Tensor] | None:
        return self.pruner.optimizer_masks() if self.pruner.zeroes_pruned else None  # type: ignore[union-attr]

    def start(self, trainer: Trainer) -> None:
        self.optimizer, self.plan = trainer.optimizer, trainer.plan

    def after_step(self, result: StepResult) -> None:
        # A dynamic plan's short epoch may pass several of the schedule's steps at once.
        for schedule_step in self.plan.schedule_steps(result.step):
            self.pruner.step(schedule_step, self.optimizer)

    def state_dict(self) -> dict[str, Any]:
        return self.pruner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pruner.load_state_dict(state)  # masks and schedule position
        if is_masked(self.optimizer):  # a masked optimizer holds the masks too
            self.pruner.apply(self.optimizer)

    def summarize(self, summary: dict[str, Any]) -> None:
        summary["sparsity"] = self.pruner.report()
        weight = next(iter(self.pruner.weights.values()))
        if self.pruner.cfg.scope == "nm":
            masks = f"nm_mask ({'triton' if use_triton(weight) else 'torch'})"
        else:  # kernels.masks.kth_smallest: a radix select on CUDA, kthvalue elsewhere
            masks = "select (radix, cuda)" if weight.is_cuda else "select (kthvalue, torch)"
        summary["kernels"]["masks"] = masks

    def export(self, state: dict[str, Tensor]) -> None:
        # Pruned weights are real zeros in the checkpoint (dynamic N:M: the masked weights).
        for name, mask in self.pruner.masks.items():
            state[name] = state[name].masked_fill(~mask, 0)


def build(run: Any) -> Pruning | None:
    """The pruner ``train.sparsity`` asks for; bad settings (N:M width, schedule) fail here."""
    pruner = build_pruner(run.model, run.cfg.sparsity, run.plan.total_steps)
    return None if pruner is None else Pruning(pruner)
