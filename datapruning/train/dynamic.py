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
- ``online`` with ``proxy`` (:class:`ProxySelection`): a small separate model
  (``train.data.proxy``, e.g. convnet1d with 4 channels against the student's
  16) scores the candidates and is trained, with the run's loss, optimizer and
  LR schedule, on the share it keeps: the examples the student then trains on.
  This is what airbench96_faster (Keller Jordan's CIFAR-10 speed record, 34.7
  -> 27.3 A100-seconds at 96%) does, with one difference: airbench trains the
  proxy first, in a run of its own over the same batch order, and replays its
  masks, while here the proxy trains alongside, step by step, so one run
  serves any sampler and a resume restores both models. The proxy scores
  the candidates without gradient and then trains on the kept rows alone
  (airbench backpropagates a masked loss through the whole candidate batch,
  which costs the backward of every candidate); everything the proxy costs
  (scoring, forward, backward, optimizer step) is in the training clock and in
  ``cost.selection_seconds``, and summary.json's ``cost.proxy`` names it with
  its size. Why a proxy at all: the student's no-grad forward over twice the
  examples it trains on is not cheap (``online`` spent 6.1 of its 20.1 s
  scoring in bench/results/dynamic.json); a proxy of a quarter of the
  student's width costs a fraction of the student's forward, and example
  difficulty largely transfers across model sizes (Coleman et al. 2020,
  "Selection via Proxy"). Whether it pays here is bench/dynamic.py's
  ``online_proxy`` recipe's to say.

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

from datapruning.data.loaders import Batch
from datapruning.train.device import Precision
from datapruning.train.step import LossFn


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


class ProxySelection:
    """Score each candidate batch with a small proxy model and train the proxy on the kept share.

    ``ProxySelection(proxy, loss_fn, keep, optimizer, scheduler)(x, y, index)``
    scores the candidates with the proxy without gradient in eval mode (as
    :class:`OnlineSelection` does with the student), keeps the rows of the
    ``round(keep * len(y))`` largest per-example losses (at least one, in
    descending loss order), takes one optimizer step of the proxy (train mode)
    on their mean loss and one step of its LR schedule, and returns them.
    With ``every`` > 1 the proxy trains on every ``every``-th call only (the
    first included) and only scores on the others, as airbench96_faster's
    proxy backpropagates every 4th batch; its LR schedule steps on every call.
    ``seconds`` (device synchronised when ``sync`` is given) counts all of it;
    ``scored`` counts the candidates, ``trained`` the rows the proxy trained
    on. :meth:`state_dict` holds what a resume needs (the proxy's weights,
    optimizer, schedule, gradient scaler and ``trained``).
    """

    def __init__(
        self,
        proxy: nn.Module,
        loss_fn: LossFn,
        keep: float,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        precision: Precision | None = None,
        scaler: torch.amp.GradScaler | None = None,
        sync: Callable[[], None] | None = None,
        teacher: nn.Module | None = None,
        every: int = 1,
        clip_grad_norm: float | None = None,
    ) -> None:
        self.model, self.loss_fn, self.keep, self.every = proxy.train(), loss_fn, keep, every
        # The run's train.clip_grad_norm: the proxy trains with the run's recipe.
        self.clip = clip_grad_norm
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.teacher = teacher  # an online teacher: the KD loss takes its logits on the batch
        self.autocast = precision.autocast if precision is not None else nullcontext
        self.sync = sync or (lambda: None)
        self.seconds = 0.0
        self.scored = 0
        self.trained = 0

    def __call__(self, x: Tensor, y: Tensor, index: Tensor) -> Batch:
        self.sync()
        start = time.perf_counter()
        count = max(1, round(self.keep * len(y)))
        # The schedule's step count is the calls so far, and it is in the resume state.
        learn = self.scheduler.last_epoch % self.every == 0
        rows = index
        self.model.eval()
        with torch.no_grad(), self.autocast():
            if self.teacher is not None:
                rows = self.teacher(x).float()
            scores = self.loss_fn(self.model(x), y, rows)
        top = scores.topk(count).indices
        self.model.train()
        if learn:
            self._learn(x[top], y[top], rows[top])
            self.trained += count
        self.scheduler.step()
        selected = (x[top], y[top], index[top])
        self.sync()
        self.seconds += time.perf_counter() - start
        self.scored += len(y)
        return selected

    def _learn(self, x: Tensor, y: Tensor, rows: Tensor) -> None:
        # The kept rows only: a backward through the whole candidate batch (airbench
        # masks the loss instead) would cost the proxy the backward of every candidate.
        with self.autocast():
            logits = self.model(x)
        loss = self.loss_fn(logits, y, rows).mean()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.clip is not None:  # the norm of the true gradients, not the scaled ones
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.optimizer.step()

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {
            "trained": self.trained,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trained = int(state["trained"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])


def full_data_examples(num_train: int, epochs: int, steps: int | None, batch_size: int) -> int:
    """Examples a full-data run of the same length trains on (epochs, or a step budget)."""
    full = epochs * num_train
    return full if steps is None else min(full, steps * batch_size)


def cost_summary(
    *, trained: int, scored: int, full_data: int, selection_seconds: float
) -> dict[str, Any]:
    """summary.json's ``cost``: passes taken against full-data training, and selection time.

    ``trained`` examples went through the student's forward and backward,
    ``scored`` candidates were scored without gradient (online selection) by the
    student (a proxy that scored them instead says so with :func:`charge_proxy`).
    ``full_data`` is what full data would have trained on over the same epochs.
    """
    forward = trained + scored
    return {
        "examples_trained": trained,
        "examples_scored": scored,
        "forward_examples": forward,
        "backward_examples": trained,
        "full_data_examples": full_data,
        "forward_fraction": forward / full_data if full_data else None,
        "backward_fraction": trained / full_data if full_data else None,
        "selection_seconds": selection_seconds,
    }


def charge_proxy(cost: dict[str, Any], proxy: dict[str, Any]) -> None:
    """A proxy model scored the candidates: the student's forward counts only what it
    trained on, and ``cost.proxy`` holds the proxy's own passes (it scores every candidate;
    ``proxy`` gives its ``backward_examples``). Its time is in ``selection_seconds``."""
    forward, full_data = cost["backward_examples"], cost["full_data_examples"]
    cost["forward_examples"] = forward
    cost["forward_fraction"] = forward / full_data if full_data else None
    cost["proxy"] = {"forward_examples": cost["examples_scored"], **proxy}


def candidate_batch(batch_size: int, keep: float) -> int:
    """The candidate batch from which online selection keeps about ``batch_size`` examples."""
    return math.ceil(batch_size / keep)
