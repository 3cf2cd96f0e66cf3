"""InfoBatch (Qin et al. 2024) as an algorithm: prune well-learned examples per epoch.

The sampler (:class:`~datapruning.data.infobatch.InfoBatchSampler`, built for
``train.data.mode: infobatch``) decides each epoch's examples from the losses
recorded so far; this algorithm plans the epoch when it starts, weighs up the
low-loss examples it kept in the step's loss, and hands the sampler each
batch's per-example losses after the step. Planning and recording are host
time spent choosing data: summary.json's ``cost.selection_seconds``.
"""

from __future__ import annotations

import time
from typing import Any

from torch import Tensor

from datapruning.data.infobatch import InfoBatchSampler
from datapruning.train.algorithms.base import Algorithm
from datapruning.train.step import StepResult


class InfoBatch(Algorithm):
    """Plans InfoBatch's epochs, weighs its losses and records them."""

    name = "infobatch"

    def __init__(self, sampler: InfoBatchSampler) -> None:
        self.sampler = sampler
        self.selection_seconds = 0.0

    def epoch_start(self, epoch: int) -> None:
        start = time.perf_counter()
        self.sampler.set_epoch(epoch)  # the loop's own set_epoch is then a no-op
        self.selection_seconds += time.perf_counter() - start

    def weights(self, index: Tensor) -> Tensor:
        return self.sampler.weights(index)

    def after_step(self, result: StepResult) -> None:
        start = time.perf_counter()  # host time: the update is a scatter queued on the device
        self.sampler.update(result.index, result.losses)
        self.selection_seconds += time.perf_counter() - start

    def summarize(self, summary: dict[str, Any]) -> None:
        cost = summary["cost"]
        cost["epoch_examples"] = list(self.sampler.sizes)
        cost["prune"], cost["anneal"] = self.sampler.prune, self.sampler.anneal


def build(run: Any) -> InfoBatch | None:
    sampler = run.data.sampler
    return InfoBatch(sampler) if isinstance(sampler, InfoBatchSampler) else None
