"""Dynamic data selection in the loop: online top-loss selection, and the cost a run saved.

Two recipes choose what to train on from the losses while training runs:

- ``infobatch`` (:class:`~datapruning.data.infobatch.InfoBatchSampler`): the
  sampler leaves out well-learned examples each epoch; the loop weighs each
  example's loss by the sampler's weight and hands it the per-example losses
  after every step (an after-step hook), and the step plan follows the
  epochs' lengths (:class:`~datapruning.train.schedule.DynamicStepPlan`).
- ``online`` (:class:`OnlineSelection`): every step draws a candidate batch of
  ``batch_size / keep`` examples, scores it with the student under
  ``torch.no_grad`` (eval mode, the run's loss: CE or KD), and trains on the
  ``keep`` share with the highest loss, as the fast CIFAR-10 training scripts
  do with a proxy model. The scoring forward is in the training clock and is
  also reported apart.

Neither saves anything unless it is measured: :func:`cost_summary` puts into
summary.json the examples forwarded and backpropagated against full-data
training over the same epochs, and the seconds spent choosing them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from datapruning.data.infobatch import InfoBatchSampler
from datapruning.data.loaders import Batch
from datapruning.train.device import Precision
from datapruning.train.step import LossFn, StepResult


class OnlineSelection:
    """Keep the ``keep`` share of each candidate batch on which the model's loss is highest.

    ``selected = OnlineSelection(model, loss_fn, 0.5)(x, y, index)`` scores the
    batch without gradient, in eval mode (batch norm uses its running
    statistics; the training step that follows updates them), and returns the
    rows of the ``round(keep * len(y))`` largest losses (at least one), in
    descending loss order. ``seconds`` (device synchronised when ``sync`` is
    given) and ``scored`` accumulate what the scoring cost.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        keep: float,
        precision: Precision | None = None,
        sync: Callable[[], None] | None = None,
        teacher: nn.Module | None = None,
    ) -> None:
        self.model, self.loss_fn, self.keep = model, loss_fn, keep
        # KD from a teacher run on each batch (augmentation): the loss takes its logits
        # in place of the indices of cached ones, so the candidates are taught too.
        self.teacher = teacher
        self.autocast = precision.autocast if precision is not None else nullcontext
        self.sync = sync or (lambda: None)
        self.seconds = 0.0
        self.scored = 0

    def __call__(self, x: Tensor, y: Tensor, index: Tensor) -> Batch:
        self.sync()
        start = time.perf_counter()
        count = max(1, round(self.keep * len(y)))
        training = self.model.training
        self.model.eval()
        with torch.no_grad():
            with self.autocast():
                logits = self.model(x)
                rows = index if self.teacher is None else self.teacher(x)
            losses = self.loss_fn(logits, y, rows.float() if self.teacher is not None else rows)
        self.model.train(training)
        top = losses.topk(count).indices
        selected = (x[top], y[top], index[top])
        self.sync()
        self.seconds += time.perf_counter() - start
        self.scored += len(y)
        return selected


class LossRecorder:
    """The after-step hook that hands an InfoBatch sampler each batch's per-example losses."""

    def __init__(self, sampler: InfoBatchSampler) -> None:
        self.sampler = sampler
        self.seconds = 0.0

    def __call__(self, result: StepResult) -> None:
        start = time.perf_counter()  # host time: the update is a scatter queued on the device
        self.sampler.update(result.index, result.losses)
        self.seconds += time.perf_counter() - start


def full_data_examples(num_train: int, epochs: int, steps: int | None, batch_size: int) -> int:
    """Examples a full-data run of the same length trains on (epochs, or a step budget)."""
    full = epochs * num_train
    return full if steps is None else min(full, steps * batch_size)


def cost_summary(
    *,
    trained: int,
    scored: int,
    full_data: int,
    selection_seconds: float,
    sampler: Any = None,
) -> dict[str, Any]:
    """summary.json's ``cost``: passes taken against full-data training, and selection time.

    ``trained`` examples went through forward and backward, ``scored`` through
    a forward without gradient (online selection); ``full_data`` is what full
    data would have trained on over the same epochs.
    """
    cost: dict[str, Any] = {
        "examples_trained": trained,
        "examples_scored": scored,
        "forward_examples": trained + scored,
        "backward_examples": trained,
        "full_data_examples": full_data,
        "forward_fraction": (trained + scored) / full_data if full_data else None,
        "backward_fraction": trained / full_data if full_data else None,
        "selection_seconds": selection_seconds,
    }
    if isinstance(sampler, InfoBatchSampler):
        cost["epoch_examples"] = list(sampler.sizes)
        cost["prune"], cost["anneal"] = sampler.prune, sampler.anneal
    return cost


def candidate_batch(batch_size: int, keep: float) -> int:
    """The candidate batch from which online selection keeps about ``batch_size`` examples."""
    return math.ceil(batch_size / keep)
