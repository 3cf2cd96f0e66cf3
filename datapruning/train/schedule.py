"""The optimisation recipe shared by the training loop and the scoring ensemble.

``plan_steps`` fixes how many optimizer steps a run takes and how its learning
rate moves: an optional linear warm-up, then a cosine to zero over the steps the
run actually takes, so a run on a subset (or RS2, or a fixed step budget)
anneals fully in its own steps (Okanovic et al. 2023 build RS2's schedule on
the reduced number of iterations the same way). ``make_optimizer`` is the one
place that turns ``train.optimizer`` into a ``torch.optim.Optimizer``:

- ``sgd``: SGD with (Nesterov) momentum and L2 weight decay added to the gradient;
- ``adamw``: AdamW (Loshchilov & Hutter 2019) with ``betas``/``eps`` and weight
  decay decoupled from the gradient (the weight shrinks by lr * weight_decay per
  step). Unless given, its lr is 1e-3 and weight_decay 0.05, the settings ViTs
  are usually trained with (DeiT: AdamW, lr 5e-4 x batch/512, weight decay
  0.05); SGD's defaults (0.05, 5e-4) would barely move or over-shrink a ViT.

Both updates are elementwise, so one optimizer over K stacked models (the
scoring ensemble) updates each model exactly as its own optimizer would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from datapruning.errors import DataPruningError
from datapruning.kernels import KernelPath
from datapruning.kernels.masked_optim import MaskedAdamW, MaskedSGD
from datapruning.train.settings import TrainConfig


@dataclass
class StepPlan:
    """How many steps a run takes, how they fall into epochs, and how the LR moves.

    The loop asks the plan, epoch by epoch, how many steps that epoch holds
    (:meth:`steps_in_epoch`) instead of reading ``len(batches)`` once, so a plan
    whose epochs vary in length (a dynamic sampler that shrinks or grows its
    epochs) only has to answer differently; ``total_steps`` bounds the run and
    the LR schedule in any case.
    """

    steps_per_epoch: int  # the nominal epoch (reported in summary.json)
    total_steps: int
    epochs: int
    warmup_steps: int

    def steps_in_epoch(self, epoch: int) -> int:
        """Optimizer steps that epoch ``epoch`` (0-based) holds at most."""
        return self.steps_per_epoch

    def begin_epoch(self, epoch: int, first_step: int, steps: int) -> None:
        """The loop starts epoch ``epoch`` at optimizer step ``first_step`` with ``steps`` steps."""

    def schedule_steps(self, step: int) -> range:
        """The sparsity schedule's steps that the ``step``-th optimizer step (1-based) reaches."""
        return range(step, step + 1)

    def lr_factor(self, step: int) -> float:
        """The LR multiplier for the ``step``-th optimizer step (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay = self.total_steps - self.warmup_steps
        progress = min(step - self.warmup_steps, decay) / decay
        return 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class DynamicStepPlan(StepPlan):
    """A plan whose epochs are as long as a dynamic sampler makes them (InfoBatch).

    How many steps a pruned epoch holds is known only when it starts (from the
    losses so far), so the schedules run on *planned work done*: within epoch
    ``e`` of ``L`` steps, after ``k`` of them, the run stands at
    ``(e + k / L) * steps_per_epoch`` nominal (full-data) steps. The LR cosine
    and the sparsity schedule are set over the nominal ``total_steps``
    (``epochs`` x full-data steps per epoch) and read at that position, so both
    end exactly at the last step of the last epoch however much each epoch was
    pruned (tests/train/test_dynamic.py). A short epoch moves the schedules on
    faster per step; the sparsity schedule is handed every nominal step that a
    real step passes, so no mask update is skipped. ``epoch_steps(epoch)`` gives
    an epoch's length once its sampler epoch is set.
    """

    epoch_steps: Callable[[int], int] | None = None
    _epoch: tuple[int, int, int] = (0, 0, 1)  # (epoch, first step, steps in it)

    def steps_in_epoch(self, epoch: int) -> int:
        assert self.epoch_steps is not None
        return self.epoch_steps(epoch)

    def begin_epoch(self, epoch: int, first_step: int, steps: int) -> None:
        self._epoch = (epoch, first_step, max(1, steps))

    def _position(self, step: int) -> tuple[int, int, int]:
        """``step`` steps into the run as (nominal steps of whole epochs, numerator, epoch steps)."""
        epoch, first, steps = self._epoch
        done = min(max(step - first, 0), steps)
        return epoch * self.steps_per_epoch, done * self.steps_per_epoch, steps

    def nominal(self, step: int) -> float:
        """Nominal (full-data) steps done after ``step`` real steps."""
        whole, numerator, steps = self._position(step)
        return whole + numerator / steps

    def lr_factor(self, step: int) -> float:
        return StepPlan.lr_factor(self, self.nominal(step))  # type: ignore[arg-type]

    def schedule_steps(self, step: int) -> range:
        def reached(count: int) -> int:
            whole, numerator, steps = self._position(count)
            return whole + numerator // steps

        return range(reached(step - 1) + 1, reached(step) + 1)


def warmup_steps(warmup_epochs: float | str, steps_per_epoch: int, total: int) -> int:
    """The linear LR warm-up's length in steps.

    ``auto`` (the default): one epoch of the run's own steps, but at most a tenth of its
    ``total`` steps, so a run of a few epochs (or a short step budget) still spends most
    of them at the peak LR and on the cosine. A number: that many epochs' worth of steps.
    Without a warm-up a KD student at lr 0.05 could collapse to a constant output within
    its first few dozen steps (bench/results/kd_stability.json).
    """
    if warmup_epochs == "auto":
        return min(steps_per_epoch, total // 10)
    return round(float(warmup_epochs) * steps_per_epoch)


def plan_steps(
    cfg: TrainConfig, steps_per_epoch: int, raise_hint: str = "train.steps or train.epochs"
) -> StepPlan:
    """The run's step count and LR schedule; ``raise_hint`` names what to raise if too short."""
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    warmup = warmup_steps(cfg.warmup_epochs, steps_per_epoch, total)
    if total <= warmup:
        budget = f"train.steps={cfg.steps}" if cfg.steps is not None else f"{total} steps"
        raise DataPruningError(
            f"{budget} leaves no steps after the {warmup}-step warm-up "
            f"(train.warmup_epochs={cfg.warmup_epochs} x {steps_per_epoch} steps per epoch); "
            f"raise {raise_hint}, or lower train.warmup_epochs"
        )
    return StepPlan(steps_per_epoch, total, math.ceil(total / steps_per_epoch), warmup)


def make_optimizer(
    params: Iterable[Tensor],
    cfg: TrainConfig,
    masks: Mapping[Tensor, Tensor] | None = None,
) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names, with ``cfg``'s settings, over ``params``.

    With ``masks`` ({parameter: bool tensor of its shape, True = kept}; an empty
    mapping when nothing is pruned yet) it is the masked variant
    (:class:`~datapruning.kernels.masked_optim.MaskedSGD` /
    :class:`~datapruning.kernels.masked_optim.MaskedAdamW`: the same update, with
    pruned weights and their state kept exactly zero inside the step, fused in
    one Triton pass per tensor group on CUDA); the pruner hands it new masks with
    ``set_masks`` whenever it changes them. Without, torch's own optimizer.
    """
    params = list(params)
    nesterov = cfg.nesterov and cfg.momentum > 0
    if masks is not None:
        if cfg.optimizer == "adamw":
            return MaskedAdamW(
                params,
                lr=cfg.lr,
                betas=cfg.betas,
                eps=cfg.eps,
                weight_decay=cfg.weight_decay,
                masks=masks,
            )
        return MaskedSGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=nesterov,
            weight_decay=cfg.weight_decay,
            masks=masks,
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=nesterov,
        weight_decay=cfg.weight_decay,
    )


def optimizer_path(optimizer: torch.optim.Optimizer, ran: Mapping[str, KernelPath]) -> str:
    """Which implementation ``optimizer`` stepped with, e.g. ``MaskedSGD (triton)``, from
    what the kernels recorded (``ran``: :func:`datapruning.kernels.paths_taken`)."""
    kernel = {MaskedSGD: "masked_sgd", MaskedAdamW: "masked_adamw"}.get(type(optimizer))
    taken = ran.get(kernel) if kernel is not None else None
    return f"{type(optimizer).__name__} ({taken['path'] if taken else 'torch'})"


def make_scheduler(
    optimizer: torch.optim.Optimizer, plan: StepPlan
) -> torch.optim.lr_scheduler.LambdaLR:
    """The plan's LR schedule on ``optimizer`` (step it once per optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, plan.lr_factor)
