"""Training dynamics as scores, recorded by any run (``train.record``).

The classic difficulty scores come from one training run's own dynamics, so a
run the pipeline trains anyway (the full-data reference, the KD teacher) can
score the data for free instead of training separate scoring models:

- **forgetting** (Toneva et al. 2019): each time an example is in a minibatch,
  the prediction of that step's forward pass (before the update) is right or
  wrong; a forgetting event is a right -> wrong transition between consecutive
  presentations. Score: the count of events; an example never predicted right
  ranks hardest with ``epochs + 1`` (as :mod:`datapruning.scoring.forgetting`).
  The file also holds each example's first-learned step.
- **aum** (area under the margin, Pleiss et al. 2020): the mean over the
  training forward passes of logit[y] - the largest other logit; score is its
  negative (low margins, likely mislabelled, rank hardest).
- **el2n** (Paul et al. 2021): after each epoch of ``el2n_epochs``, one eval-mode
  pass over the training set records ||softmax(f(x)) - onehot(y)||; the score is
  the mean over the passes.

Forgetting and AUM need every presentation of every example, so they refuse a
run that leaves examples out of an epoch (subsets, RS2, InfoBatch, online
selection) with one line; EL2N's pass covers the whole training set whatever
the run trains on. Recording changes no weight: the per-step bookkeeping reads
the step's detached logits, and the EL2N pass runs in eval mode without
gradient. Its cost is measured and reported apart (``summary["dynamics"]``):
the bookkeeping is inside the training clock, the EL2N passes outside it; each
scores file's ``seconds`` is its own metric's part (EL2N: the passes; forgetting
and AUM: the bookkeeping they share).
Each metric is written as a scores file (``scores-<metric>.parquet`` in the run
directory, the format of :mod:`datapruning.scores`) with its provenance: the run
directory, its key, seed, the dataset's fingerprint, the epochs and what was
recorded; ``datapruning select`` reads it like any other. Its state is part of
the resume point, so a run killed and resumed records the same statistics.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from datapruning import __version__
from datapruning.data.dataset import dataset_record
from datapruning.data.stream import train_rows
from datapruning.errors import DataPruningError
from datapruning.scores import Scores
from datapruning.train.algorithms.base import Algorithm
from datapruning.train.evaluation import predict
from datapruning.train.step import StepResult

SCORES_NAME = "scores-{metric}.parquet"


class Dynamics(Algorithm):
    """Records forgetting events, margins and EL2N passes, and writes them as scores."""

    name = "dynamics"

    def __init__(self, run: Any) -> None:
        self.cfg, self.run = run.cfg.record, run
        n, device = run.dataset.num_train, run.device
        self.previous = torch.zeros(n, dtype=torch.bool, device=device)
        self.learned = torch.zeros(n, dtype=torch.bool, device=device)
        self.forgotten = torch.zeros(n, dtype=torch.int64, device=device)
        self.first_learned = torch.full((n,), -1, dtype=torch.int64, device=device)
        self.presented = torch.zeros(n, dtype=torch.int64, device=device)
        self.margin_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.el2n_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.el2n_passes: list[int] = []  # the epochs recorded so far
        self.step_seconds = 0.0  # bookkeeping in the steps (inside the training clock)
        self.pass_seconds = 0.0  # EL2N passes (outside it)
        self.counts = self.cfg.forgetting or self.cfg.aum

    def after_step(self, result: StepResult) -> None:
        if not self.counts:
            return
        start = time.perf_counter()
        index, logits, targets = result.index, result.logits.float(), result.targets
        self.presented.index_add_(0, index, torch.ones_like(index))
        if self.cfg.forgetting:
            correct = logits.argmax(dim=1) == targets
            before = self.previous[index]
            self.forgotten.index_add_(0, index, (before & ~correct).long())
            self.previous[index] = correct
            new = correct & ~self.learned[index]
            self.first_learned[index[new]] = result.step
            self.learned[index] |= correct
        if self.cfg.aum:
            target = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
            others = logits.scatter(1, targets.unsqueeze(1), float("-inf")).amax(dim=1)
            self.margin_sum.index_add_(0, index, (target - others).double())
        self.step_seconds += time.perf_counter() - start

    def epoch_end(self, epoch: int) -> None:
        if epoch + 1 not in self.cfg.el2n_epochs:
            return
        start = time.perf_counter()
        run = self.run
        with torch.no_grad():
            logits = predict(run.model, train_rows(run.dataset, run.device), run.cfg.batch_size)
            labels = torch.as_tensor(run.dataset.y_train, device=logits.device)
            onehot = F.one_hot(labels.long(), logits.shape[1]).to(torch.float32)
            error = (logits.float().softmax(dim=1) - onehot).norm(dim=1)
        self.el2n_sum += error.double().to(self.el2n_sum.device)
        self.el2n_passes.append(epoch + 1)
        self.pass_seconds += time.perf_counter() - start

    def state_dict(self) -> dict[str, Any]:
        tensors = ("previous", "learned", "forgotten", "first_learned", "presented")
        state: dict[str, Any] = {name: getattr(self, name) for name in tensors}
        state.update(margin_sum=self.margin_sum, el2n_sum=self.el2n_sum)
        state.update(
            el2n_passes=list(self.el2n_passes), seconds=[self.step_seconds, self.pass_seconds]
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("previous", "learned", "forgotten", "first_learned", "presented"):
            getattr(self, name).copy_(state[name])
        self.margin_sum.copy_(state["margin_sum"])
        self.el2n_sum.copy_(state["el2n_sum"])
        self.el2n_passes = list(state["el2n_passes"])
        self.step_seconds, self.pass_seconds = state["seconds"]

    def scores(self) -> dict[str, Scores]:
        """The recorded metrics as Scores tables with their provenance."""
        run, made = self.run, {}
        epochs = run.plan.epochs
        if self.cfg.forgetting:
            never = float(epochs + 1)
            counts = torch.where(self.learned, self.forgotten.double(), never)
            extra = {"first_learned_step": self.first_learned, "presentations": self.presented}
            params = {"never_learned_score": never, "never_learned": int((~self.learned).sum())}
            made["forgetting"] = self._scores(
                "forgetting", counts, extra, params, self.step_seconds
            )
        if self.cfg.aum:
            aum = self.margin_sum / self.presented.clamp(min=1).double()
            extra = {"aum": aum, "presentations": self.presented}
            params = {"score": "-AUM (low margin: hard)"}
            made["aum"] = self._scores("aum", -aum, extra, params, self.step_seconds)
        if self.el2n_passes:
            el2n = self.el2n_sum / len(self.el2n_passes)
            params = {"after_epochs": self.el2n_passes}
            made["el2n"] = self._scores("el2n", el2n, {}, params, self.pass_seconds)
        return made

    def _scores(
        self,
        metric: str,
        score: torch.Tensor,
        extra: dict[str, torch.Tensor],
        params: dict,
        seconds: float,
    ) -> Scores:
        """One metric's table; ``seconds``: what recording it cost (the EL2N passes for el2n,
        the step bookkeeping for forgetting and aum, which share it when both are on), so a
        pipeline charges each metric its own cost."""
        run, seed = self.run, self.run.cfg.seed
        values = score.cpu().numpy().astype(np.float64)
        table = pd.DataFrame(
            {
                "index": np.arange(run.dataset.num_train, dtype=np.int64),
                "score": values,
                "label": np.asarray(run.dataset.y_train, dtype=np.int64),
                f"score_seed{seed}": values,
                **{name: column.cpu().numpy() for name, column in extra.items()},
            }
        )
        metadata = {
            "metric": metric,
            "params": {"source": "run", "epochs": run.plan.epochs, **params},
            "dataset": dataset_record(run.dataset),
            "model": {"name": run.model_name, "params": dict(run.model_params)},
            "seeds": [seed],
            "seconds": seconds,
            # Inside the run's training clock (the step bookkeeping) or outside it (passes).
            "seconds_in_training": 0.0 if metric == "el2n" else seconds,
            "run": {
                "dir": str(run.run_dir) if run.run_dir is not None else None,
                "config_hash": run.config_hash,
                "data_mode": run.data.mode,
                "recorded": self.recorded(),
            },
            "version": __version__,
        }
        return Scores(table, metadata)

    def recorded(self) -> list[str]:
        return [
            m for m, on in [("forgetting", self.cfg.forgetting), ("aum", self.cfg.aum)] if on
        ] + (["el2n"] if self.el2n_passes else [])

    def summarize(self, summary: dict[str, Any]) -> None:
        train = float(summary.get("train_seconds") or 0.0)
        summary["dynamics"] = {
            "recorded": self.recorded(),
            "el2n_after_epochs": list(self.el2n_passes),
            "seconds_in_training": self.step_seconds,
            "seconds_outside_training": self.pass_seconds,
            "share_of_train_seconds": (self.step_seconds + self.pass_seconds) / train
            if train
            else None,
            "files": [SCORES_NAME.format(metric=m) for m in self.recorded()],
        }

    def write(self, run_dir: Path) -> None:
        for metric, scores in self.scores().items():
            scores.save(run_dir / SCORES_NAME.format(metric=metric))


def build(run: Any) -> Dynamics | None:
    cfg = run.cfg.record
    if not cfg.enabled:
        return None
    if (cfg.forgetting or cfg.aum) and run.data.mode != "full":
        what = " and ".join(m for m, on in [("forgetting", cfg.forgetting), ("aum", cfg.aum)] if on)
        raise DataPruningError(
            f"train.record {what} counts every presentation of every example, but this run's "
            f"train.data.mode is {run.data.mode}; record them on a full-data run, or keep only "
            "train.record.el2n_epochs"
        )
    late = [epoch for epoch in cfg.el2n_epochs if epoch > run.plan.epochs]
    if late:
        raise DataPruningError(
            f"train.record.el2n_epochs {late} come after the run's last epoch {run.plan.epochs}; "
            "give epochs it reaches"
        )
    return Dynamics(run)
