"""Forgetting scores (Toneva et al. 2019, "An Empirical Study of Example Forgetting").

While a model trains, each time an example is in a minibatch its prediction
(from that step's forward pass, before the update) is marked right or wrong. A
forgetting event is a right -> wrong transition between consecutive
presentations. The score is the number of forgetting events; examples never
predicted right during the run rank hardest, with a score of ``epochs + 1``,
more than any count the run can produce (at most one event per two epochs).
Counts are averaged over ``scoring.seeds`` runs, trained at once as a batched
ensemble (``scoring.batched=false``, or a model with BatchNorm, trains them one
at a time through the same steps).
"""

from __future__ import annotations

import numpy as np
import torch

from datapruning.config import TrainConfig
from datapruning.scores import Scores
from datapruning.scoring._common import MetricJob
from datapruning.scoring.driver import score_seed_groups
from datapruning.scoring.ensemble import ensemble_threads, train_ensemble


class ForgettingCounter:
    """Accumulates forgetting events of K runs from per-step predictions."""

    def __init__(self, num_models: int, num_examples: int, device: torch.device) -> None:
        shape = (num_models, num_examples)
        self.previous = torch.zeros(shape, dtype=torch.bool, device=device)
        self.learned = torch.zeros(shape, dtype=torch.bool, device=device)
        self.forgotten = torch.zeros(shape, dtype=torch.int64, device=device)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> None:
        correct = logits.argmax(dim=-1) == labels
        before = self.previous.gather(1, index)
        self.forgotten.scatter_add_(1, index, (before & ~correct).long())
        self.previous.scatter_(1, index, correct)
        self.learned.scatter_(1, index, self.learned.gather(1, index) | correct)

    def scores(self, epochs: int) -> np.ndarray:
        counts = self.forgotten.double()
        return torch.where(self.learned, counts, float(epochs + 1)).cpu().numpy()


def score_forgetting(job: MetricJob) -> Scores:
    """Forgetting events over ``scoring.epochs`` epochs, mean over ``scoring.seeds`` runs."""
    dataset, scoring, model_cfg, progress = job.dataset, job.scoring, job.model, job.progress
    never_learned = scoring.epochs + 1

    def compute(chunk: list[int], recipe: TrainConfig, batched: bool) -> np.ndarray:
        counter = ForgettingCounter(len(chunk), dataset.num_train, torch.device(recipe.device))
        train_ensemble(
            dataset,
            model_cfg,
            recipe,
            chunk,
            scoring.epochs,
            on_batch=counter,
            desc="forgetting",
            progress=progress,
            threads=ensemble_threads(scoring.ensemble_threads, len(chunk))
            if batched
            else recipe.threads,
        )
        return counter.scores(scoring.epochs)

    scores = score_seed_groups(
        "forgetting", compute, job, extra_params={"never_learned_score": never_learned}
    )
    # Per seed, in the order of the metadata's seeds.
    scores.metadata["params"]["never_learned"] = [
        int(np.count_nonzero(scores.table[f"score_seed{seed}"] == never_learned))
        for seed in scores.metadata["seeds"]
    ]
    return scores
