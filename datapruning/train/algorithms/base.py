"""What an optional piece of training may do, and when: the algorithm protocol.

The loop (:func:`datapruning.train.loop.fit`) runs epochs of steps and knows
nothing of distillation, pruning or data selection. Each of those is an
:class:`Algorithm`, called at a few named events, as Composer's algorithms are
at its engine's events and Lightning's callbacks at the trainer's hooks:

- build time, in :func:`datapruning.train.run.resolve_run`, once the model is
  built (a registered factory returns the algorithm, or None when the run's
  settings leave it off): it may replace the loss (:meth:`Algorithm.loss`, KD)
  and hand the optimizer its masks (:meth:`Algorithm.optimizer_masks`, GMP);
- :meth:`~Algorithm.start`: the optimizer and the LR schedule exist;
- :meth:`~Algorithm.epoch_start`: before the epoch's sampler is set (InfoBatch plans it);
- :meth:`~Algorithm.batch`: a batch on the device, before the step (online selection);
- :meth:`~Algorithm.weights`: per-example loss weights for the batch (InfoBatch);
- :meth:`~Algorithm.after_step`: after ``optimizer.step()``, before the LR schedule
  steps (the pruner, the loss recorder, the dynamics recorder);
- :meth:`~Algorithm.epoch_end`: an epoch's steps are done, outside the training clock,
  before its evaluation (the dynamics recorder's EL2N pass);
- :meth:`~Algorithm.after_eval`: after each evaluation;
- :meth:`~Algorithm.write`: the run finished; its own files go beside the checkpoint.

An algorithm also adds its state to the resume file (:meth:`~Algorithm.state_dict`),
its part to the summary (:meth:`~Algorithm.summarize`) and to the exported weights
(:meth:`~Algorithm.export`), what it computes from to the run's key
(:meth:`~Algorithm.identity`), and says which of its seconds were spent choosing
data (``selection_seconds``) and how many examples it only scored (``scored``).

The loop calls a hook only on the algorithms that override it
(:func:`overriding`), so an algorithm costs nothing at the events it ignores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from datapruning.data.loaders import Batch
from datapruning.train.device import Precision
from datapruning.train.step import Loss, StepResult

if TYPE_CHECKING:
    from datapruning.train.schedule import StepPlan


@dataclass
class Trainer:
    """What an algorithm may use once training starts (:meth:`Algorithm.start`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    plan: StepPlan
    loss: Loss
    precision: Precision
    device: torch.device
    sync: Callable[[], None] | None


class Algorithm:
    """An optional part of training. Every hook is a no-op here; override the ones you need.

    ``name`` keys the algorithm's state in the resume file and its identity in the
    run's key, so it must be unique among a run's algorithms.
    """

    name: ClassVar[str]
    # Host seconds spent choosing data (summary.json's cost.selection_seconds), and
    # examples scored without a backward pass (cost.examples_scored), in this process.
    selection_seconds: float = 0.0
    scored: int = 0

    def loss(self, loss: Loss) -> Loss:
        """The run's loss, given the one built so far (cross-entropy to start with)."""
        return loss

    def optimizer_masks(self) -> Mapping[Tensor, Tensor] | None:
        """{weight: keep-mask} for a masked optimizer, or None for a plain one."""
        return None

    def start(self, trainer: Trainer) -> None:
        """Training starts (or resumes: the resume state is loaded right after this)."""

    def epoch_start(self, epoch: int) -> None:
        """Epoch ``epoch`` (0-based) starts, before the sampler is set to it."""

    def batch(self, x: Tensor, y: Tensor, index: Tensor) -> Batch:
        """The batch the step trains on, from the one the loader gave."""
        return x, y, index

    def weights(self, index: Tensor) -> Tensor | None:
        """Per-example loss weights for the batch of these training-set indices."""
        return None

    def after_step(self, result: StepResult) -> None:
        """After ``optimizer.step()``; ``result.step`` counts the steps taken."""

    def epoch_end(self, epoch: int) -> None:
        """Epoch ``epoch`` (0-based) trained, off the training clock, before its evaluation."""

    def after_eval(self, epoch: int, line: Mapping[str, Any]) -> None:
        """After the evaluation that ends epoch ``epoch`` (0-based); ``line`` is its log line."""

    def identity(self) -> Any:
        """What the run computes from that the train config does not say (JSON-able)."""
        return None

    def state_dict(self) -> dict[str, Any] | None:
        """What a bit-exact resume needs beyond the model, optimizer and sampler."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; called after the model and optimizer are loaded."""

    def summarize(self, summary: dict[str, Any]) -> None:
        """Add this algorithm's part to the finished run's summary (in place)."""

    def export(self, state: dict[str, Tensor]) -> None:
        """Fold what the exported weights must show into ``state`` (in place)."""

    def write(self, run_dir: Path) -> None:
        """Write this algorithm's own files into the finished run's directory (before
        summary.json, which marks the run finished)."""


# Builds an algorithm for a resolved run (datapruning.train.run.Run), or None when the
# run's settings leave it off. Called once the model is built, before training starts.
Factory = Callable[[Any], "Algorithm | None"]


def overriding(algorithms: list[Algorithm], hook: str) -> list[Algorithm]:
    """The algorithms whose class overrides ``hook`` (the others' would do nothing)."""
    default = getattr(Algorithm, hook)
    return [a for a in algorithms if getattr(type(a), hook) is not default]
