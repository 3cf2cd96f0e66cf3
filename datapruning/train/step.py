"""One optimizer step of the training loop, and the loss it minimises.

The step is assembled once per run (:class:`TrainStep`), so nothing is
branched on per batch: forward under the run's autocast → per-example losses
``loss_fn(logits, y, index)`` (float32; cross-entropy or KD, :func:`make_loss_fn`)
→ their mean, or their weighted mean (:func:`reduce_losses`) → backward
(through fp16's gradient scaler where there is one) → ``optimizer.step()`` →
the after-step hooks, each handed a :class:`StepResult` (the pruner; a sampler
that records per-example losses) → the LR schedule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datapruning.kernels.kd_loss import kd_loss
from datapruning.train.device import Precision

# (logits (B, C), labels (B,), training-set indices (B,)) -> per-example float32 losses (B,).
# With an online teacher the third argument is the teacher's logits on the batch (B, C).
LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class StepResult:
    """What one optimizer step leaves for the after-step hooks."""

    step: int  # optimizer steps taken, this one included
    index: Tensor  # the batch's training-set indices
    losses: Tensor  # the batch's per-example losses (detached, float32)
    logits: Tensor  # the batch's logits from the step's forward pass, before the update (detached)
    targets: Tensor  # the batch's labels


# Called after every optimizer step (the pruner; a sampler that records losses).
AfterStep = Callable[[StepResult], None]


@dataclass(frozen=True)
class Loss:
    """The run's per-example loss: cross-entropy, or KD from the teacher.

    ``fn(logits, y, rows)`` takes the batch's training-set indices as ``rows``
    (cached teacher logits are gathered by index), or, with an online
    ``teacher`` (KD with augmentation), that teacher's logits on the batch.
    """

    fn: LossFn
    teacher: nn.Module | None = None


def make_loss_fn(
    teacher_logits: Tensor | None = None,
    *,
    alpha: float = 0.0,
    temperature: float = 1.0,
    online: bool = False,
) -> LossFn:
    """The run's per-example loss, chosen once: cross-entropy, or KD from the teacher.

    With ``teacher_logits`` (one row per training example, on the run's device)
    the loss is :func:`datapruning.kernels.kd_loss.kd_loss`, which gathers the
    batch's teacher rows by index: the fused Triton kernel on CUDA, its torch
    reference (:func:`datapruning.train.kd.per_example_kd_loss`) on CPU. With
    ``online`` the same kernel takes the teacher's logits on the batch itself
    (:class:`TrainStep` runs the teacher on each augmented batch).
    """
    if online:

        def online_distillation(logits: Tensor, y: Tensor, teacher_batch: Tensor) -> Tensor:
            return kd_loss(logits, y, teacher_batch, None, alpha=alpha, temperature=temperature)

        return online_distillation
    if teacher_logits is None:

        def cross_entropy(logits: Tensor, y: Tensor, index: Tensor) -> Tensor:
            return F.cross_entropy(logits.float(), y, reduction="none")

        return cross_entropy

    def distillation(logits: Tensor, y: Tensor, index: Tensor) -> Tensor:
        return kd_loss(logits, y, teacher_logits, index, alpha=alpha, temperature=temperature)

    return distillation


def reduce_losses(losses: Tensor, weights: Tensor | None = None) -> Tensor:
    """The batch loss: the mean of the per-example losses, each times its weight if given.

    Weights rescale examples (a sampler that keeps an example less often can
    weigh it up, as InfoBatch does) and the mean stays over the batch, so
    weights of 1 give the plain mean. The weighted mean is one dot product with
    ``weights / B`` (no gradient through the weights), a single autograd node
    like the plain mean: ``(losses * weights).mean()`` took two, 25-30 us more
    per step on a 100-example batch (bench/results/infobatch_overhead.json).
    """
    if weights is None:
        return losses.mean()
    return losses.dot(weights.to(losses.dtype) / len(losses))


class TrainStep:
    """One optimizer step; every choice (loss, precision, hooks) made once, at construction.

    Calling it takes a batch already on the device and the number of steps
    taken once this one is done, and returns the batch's mean loss (detached).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        precision: Precision,
        scaler: torch.amp.GradScaler | None = None,
        after_step: Sequence[AfterStep] = (),
        teacher: nn.Module | None = None,
        clip_grad_norm: float | None = None,
    ) -> None:
        self.model, self.loss_fn, self.optimizer, self.scheduler = (
            model,
            loss_fn,
            optimizer,
            scheduler,
        )
        self.autocast = precision.autocast
        self.after_step = list(after_step)
        self.scaler = scaler
        # An online teacher (KD with augmentation): run on the same batch under no_grad and
        # the run's precision, inside the step, so the clock counts its forward pass.
        self.teacher = teacher
        # Gradients rescaled to this total norm at most before the optimizer step (None: not).
        self.clip = clip_grad_norm
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._update = self._scaled_update if scaler is not None else self._update_plain

    def __call__(
        self, x: Tensor, y: Tensor, index: Tensor, step: int, weights: Tensor | None = None
    ) -> Tensor:
        rows = index if self.teacher is None else self._teach(x)
        with self.autocast():
            logits = self.model(x)
        losses = self.loss_fn(logits, y, rows)  # float32, outside autocast
        loss = reduce_losses(losses, weights)
        self.optimizer.zero_grad(set_to_none=True)
        self._update(loss)
        if self.after_step:
            result = StepResult(step, index, losses.detach(), logits.detach(), y)
            for hook in self.after_step:
                hook(result)
        self.scheduler.step()
        return loss.detach()

    def _teach(self, x: Tensor) -> Tensor:
        assert self.teacher is not None
        with torch.no_grad(), self.autocast():
            return self.teacher(x).float()

    def _update_plain(self, loss: Tensor) -> None:
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()

    def _scaled_update(self, loss: Tensor) -> None:
        assert self.scaler is not None
        self.scaler.scale(loss).backward()
        if self.clip is not None:  # the norm of the true gradients, not the scaled ones
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.scaler.step(self.optimizer)  # skipped when a gradient overflowed
        self.scaler.update()


class CompileTimer:
    """Wraps the first two steps of a compiled model to time its compilation.

    torch.compile compiles on the first call (forward and backward graphs), so
    ``seconds`` is the first step's wall time beyond the second's, each timed
    with the device synchronised; later recompiles (the epoch's smaller last
    batch, eval mode) are not in it. The time is in the training clock either way.
    """

    def __init__(self, step: TrainStep, sync: Callable[[], None] | None) -> None:
        self.step, self.sync = step, sync or (lambda: None)
        self.times: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        if len(self.times) >= 2:
            return self.step(*args, **kwargs)
        self.sync()
        start = time.perf_counter()
        loss = self.step(*args, **kwargs)
        self.sync()
        self.times.append(time.perf_counter() - start)
        return loss

    @property
    def seconds(self) -> float:
        if len(self.times) < 2:
            return sum(self.times)
        return max(0.0, self.times[0] - self.times[1])
