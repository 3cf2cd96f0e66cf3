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

import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from datapruning.errors import DataPruningError
from datapruning.train import distributed
from datapruning.train.algorithms.base import Algorithm, Trainer
from datapruning.train.sparsity import DynamicNMPruner, Pruner, build_pruner, is_masked
from datapruning.train.step import StepResult


class Pruning(Algorithm):
    """Runs a pruner's schedule after every optimizer step of the loop."""

    name = "pruning"

    def __init__(self, pruner: Pruner) -> None:
        self.pruner = pruner
        self.optimizer: torch.optim.Optimizer | None = None
        self.plan: Any = None
        self.kernel_seconds: float | None = None

    def optimizer_masks(self) -> Mapping[Tensor, Tensor] | None:
        return self.pruner.optimizer_masks() if self.pruner.zeroes_pruned else None  # type: ignore[union-attr]

    def start(self, trainer: Trainer) -> None:
        self.optimizer, self.plan = trainer.optimizer, trainer.plan

    def after_step(self, result: StepResult) -> None:
        # A dynamic plan's short epoch may pass several of the schedule's steps at once.
        for schedule_step in self.plan.schedule_steps(result.step):
            self.pruner.step(schedule_step, self.optimizer)
            updated = getattr(self.pruner, "last_update", schedule_step) == schedule_step
            if self.check_ranks and updated:  # dynamic N:M: every step
                self._check_ranks_agree(schedule_step)

    # Under DDP every rank computes the masks from the same (averaged) weights; with
    # DATAPRUNING_DEBUG=1 each mask update is checked across ranks (two numbers per layer).
    check_ranks = False

    def _check_ranks_agree(self, step: int) -> None:
        world = distributed.current()
        kept = [float(mask.sum()) for mask in self.pruner.masks.values()]
        # Positions too: the kept count alone would miss two masks of the same size.
        spread = [float(mask.flatten().nonzero().sum()) for mask in self.pruner.masks.values()]
        low = world.reduce(kept + spread, "min")
        high = world.reduce(kept + spread, "max")
        if low != high:
            raise DataPruningError(
                f"the pruning masks differ between the {world.size} processes after step "
                f"{step}: the ranks' weights diverged (report this with the config)"
            )

    def state_dict(self) -> dict[str, Any]:
        return self.pruner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pruner.load_state_dict(state)  # masks and schedule position
        if is_masked(self.optimizer):  # a masked optimizer holds the masks too
            self.pruner.apply(self.optimizer)

    def summarize(self, summary: dict[str, Any]) -> None:
        summary["sparsity"] = self.pruner.report()
        if self.kernel_seconds is not None:  # timing the 2:4 layers, before the run
            summary["sparsity"]["kernel_timing_seconds"] = self.kernel_seconds
        # N:M masks by nm_mask; magnitude masks by a select (radix on CUDA, kthvalue on CPU).
        ran = summary["kernels"].get("paths", {})
        kernel = "nm_mask" if self.pruner.cfg.scope == "nm" else "select"
        if kernel in ran:
            summary["kernels"]["masks"] = f"{kernel} ({ran[kernel]['path']})"

    def export(self, state: dict[str, Tensor]) -> None:
        # Pruned weights are real zeros in the checkpoint (dynamic N:M: the masked weights).
        for name, mask in self.pruner.masks.items():
            state[name] = state[name].masked_fill(~mask, 0)


def build(run: Any) -> Pruning | None:
    """The pruner ``train.sparsity`` asks for; bad settings (N:M width, schedule) fail here."""
    pruner = build_pruner(run.model, run.cfg.sparsity, run.plan.total_steps)
    if pruner is None:
        return None
    algorithm = Pruning(pruner)
    algorithm.check_ranks = run.world.distributed and os.environ.get("DATAPRUNING_DEBUG") == "1"
    if isinstance(pruner, DynamicNMPruner) and pruner.cfg.kernel == "semi_structured":
        algorithm.kernel_seconds = _decide_kernels(run)
    return algorithm


def _decide_kernels(run: Any) -> float:
    """Time each 2:4 layer shape, sparse against dense, before the run (outside its clock
    and any compiled graph), on a batch of the run's shape; the seconds it took."""
    from datapruning.kernels.semi_structured import decide_before_run

    start = time.perf_counter()
    example = torch.zeros(run.cfg.batch_size, *run.dataset.input_shape, device=run.device)
    decide_before_run(run.model, example, autocast=run.precision.dtype)
    return time.perf_counter() - start
