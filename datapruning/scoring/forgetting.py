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

import os

import numpy as np
import torch

from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
from datapruning.data.sources import Dataset
from datapruning.scores import Scores
from datapruning.scoring._common import SeedStore, build_scores, check_features, check_labels
from datapruning.scoring.el2n import scoring_train_config
from datapruning.scoring.ensemble import build_models, can_batch, ensemble_threads, train_ensemble


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


def score_forgetting(
    dataset: Dataset,
    scoring: ScoringConfig | None = None,
    model_cfg: ModelConfig | None = None,
    train_cfg: TrainConfig | None = None,
    progress: bool | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> Scores:
    """Forgetting events over ``scoring.epochs`` epochs, mean over ``scoring.seeds`` runs."""
    scoring = scoring or ScoringConfig()
    model_cfg = model_cfg or ModelConfig()
    train_cfg = scoring_train_config(train_cfg or TrainConfig(), scoring.epochs)
    check_features(dataset.x_train)
    check_labels(dataset)
    model = {"name": model_cfg.name or dataset.default_model, "params": model_cfg.params}
    # Models with BatchNorm cannot train in a batched ensemble: one seed per group.
    batched = scoring.batched and can_batch(
        build_models(dataset, model_cfg, [0], torch.device("cpu"))[0]
    )
    params = {
        "epochs": scoring.epochs,
        "seeds": scoring.seeds,
        "batched": batched,
        "ensemble_size": scoring.ensemble_size if batched else 1,
        "never_learned_score": scoring.epochs + 1,
        "train": train_cfg.model_dump(mode="json"),
    }
    store = SeedStore(
        work_dir, {"metric": "forgetting", "dataset": dataset.fingerprint, "model": model} | params
    )

    def compute(chunk: list[int]) -> np.ndarray:
        counter = ForgettingCounter(len(chunk), dataset.num_train, torch.device(train_cfg.device))
        train_ensemble(
            dataset,
            model_cfg,
            train_cfg,
            chunk,
            scoring.epochs,
            on_batch=counter,
            desc="forgetting",
            progress=progress,
            threads=ensemble_threads(scoring.ensemble_threads, len(chunk))
            if batched
            else train_cfg.threads,
        )
        return counter.scores(scoring.epochs)

    seeds = list(range(scoring.seeds))
    group = scoring.ensemble_size if batched else 1
    done = store.run(seeds, dataset.num_train, group, compute, "forgetting", progress)
    # Per seed, in the order of the metadata's seeds.
    params["never_learned"] = [
        int(np.count_nonzero(done[seed][0] == scoring.epochs + 1)) for seed in seeds
    ]
    return build_scores(
        dataset,
        "forgetting",
        {seed: done[seed][0] for seed in seeds},
        params=params,
        model=model,
        seconds=sum(done[seed][1] for seed in seeds),
    )
