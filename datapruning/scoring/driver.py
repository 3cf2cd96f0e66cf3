"""The trained-model driver shared by every metric that scores with trained models.

EL2N, GraNd and forgetting all train ``scoring.seeds`` scoring models for
``scoring.epochs`` epochs on every example and then read something off them (or,
for forgetting, off their training). This module holds that part once: the
scoring models' recipe (:func:`scoring_train_config`), training a group of
seeds as one batched ensemble (:mod:`datapruning.scoring.ensemble`,
``scoring.batched``, the default) or one after another through the training
loop, and saving each group of ``scoring.ensemble_size`` seeds to ``work_dir``
as it finishes, so an interrupted run resumes with the missing seeds. A metric
module supplies only what it computes from a trained group.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from datapruning import user
from datapruning.config import DataConfig, ScoringConfig, SparsityConfig, TrainConfig
from datapruning.data.sources import Dataset
from datapruning.data.stream import train_rows
from datapruning.scores import Scores
from datapruning.scoring._common import (
    MetricJob,
    SeedStore,
    build_scores,
    check_features,
    check_labels,
)
from datapruning.scoring.ensemble import (
    Ensemble,
    build_models,
    can_batch,
    ensemble_threads,
    train_ensemble,
)
from datapruning.user import ModelSpec

# Scores of one trained ensemble: (K, N) for the ensemble's seeds.
EnsembleScorer = Callable[[Ensemble, torch.Tensor, torch.Tensor], torch.Tensor]

# Scores of one group of seeds, (len(group), N), given the group, the scoring
# models' recipe (scoring_train_config) and whether the group trains batched.
GroupScorer = Callable[[list[int], TrainConfig, bool], np.ndarray]


def scoring_train_config(train_cfg: TrainConfig, epochs: int) -> TrainConfig:
    """The recipe of a scoring model: ``train_cfg``'s optimiser, dense, on every example.

    Scoring models see every example for ``epochs`` epochs, whatever the
    config's data mode, step budget, sparsity or augmentation say about students
    (the batched ensemble trains on the inputs as they are; the sequential path
    through the loop does the same, so both agree).
    """
    return train_cfg.model_copy(
        update={
            "epochs": epochs,
            "steps": None,
            "data": DataConfig(),
            "eval_every": 0,
            "targets": [],
            "reference": None,
            "sparsity": SparsityConfig(),
            "checkpoint_every": 0,
            "augment": "none",
        }
    )


def score_seed_groups(
    metric: str,
    compute: GroupScorer,
    job: MetricJob,
    extra_params: dict[str, Any] | None = None,
) -> Scores:
    """A metric computed by scoring models, per group of seeds (batched or one by one).

    Checks the inputs, records the recipe, and resumes from the groups a
    previous run saved in ``job.work_dir``; keeps per-seed columns.
    """
    dataset, scoring, model_cfg = job.dataset, job.scoring, job.model
    train_cfg = scoring_train_config(job.train, scoring.epochs)
    check_features(dataset.x_train)  # a streaming set chunk by chunk
    check_labels(dataset)
    model = user.record(model_cfg, dataset)
    # Models with BatchNorm cannot train in a batched ensemble: one seed per group.
    probe = build_models(dataset, model_cfg, [0], torch.device("cpu"))[0]
    batched = scoring.batched and can_batch(probe)
    params = {
        "epochs": scoring.epochs,
        "seeds": scoring.seeds,
        "batched": batched,
        "ensemble_size": scoring.ensemble_size if batched else 1,
        "train": train_cfg.model_dump(mode="json"),
        **(extra_params or {}),
    }
    identity = {"metric": metric, "dataset": dataset.fingerprint, "model": model}
    # Batched and sequential runs agree only up to rounding, so they are not mixed.
    store = SeedStore(job.work_dir, identity | {"params": params})
    seeds = list(range(scoring.seeds))
    group = scoring.ensemble_size if batched else 1
    done = store.run(
        seeds,
        dataset.num_train,
        group,
        lambda chunk: compute(chunk, train_cfg, batched),
        metric,
        job.progress,
    )
    return build_scores(
        dataset,
        metric,
        # Every seed, or under only_seeds() (a fan-out's share) the seeds done so far.
        {seed: done[seed][0] for seed in sorted(done)},
        params=params,
        model=model,
        seconds=sum(seconds for _, seconds in done.values()),
        reused_seeds=store.reused,
    )


def score_with_models(
    metric: str,
    scorer: EnsembleScorer,
    job: MetricJob,
    extra_params: dict[str, Any] | None = None,
) -> Scores:
    """Train scoring models per seed (batched or not), then score each with ``scorer``."""
    dataset = job.dataset

    def compute(chunk: list[int], recipe: TrainConfig, batched: bool) -> np.ndarray:
        ensemble = train_group(
            dataset, job.model, recipe, job.scoring, chunk, batched, metric, job.progress
        )
        x = train_rows(dataset, recipe.device)  # a streaming set is read in batches
        y = torch.as_tensor(dataset.y_train, device=recipe.device)
        with torch.no_grad():
            return scorer(ensemble, x, y).cpu().numpy()

    return score_seed_groups(metric, compute, job, extra_params)


def train_group(
    dataset: Dataset,
    model_cfg: ModelSpec,
    train_cfg: TrainConfig,
    scoring: ScoringConfig,
    seeds: Sequence[int],
    batched: bool,
    desc: str,
    progress: bool | None,
) -> Ensemble:
    """The scoring models of ``seeds``, trained as one ensemble or one by one and stacked."""
    epochs = scoring.epochs
    if batched:
        return train_ensemble(
            dataset,
            model_cfg,
            train_cfg,
            seeds,
            epochs,
            desc=desc,
            threads=ensemble_threads(scoring.ensemble_threads, len(seeds)),
            progress=progress,
        )
    # One after another through the training loop; stacked afterwards so that
    # both paths score through the same code.
    from torch.func import stack_module_state

    from datapruning.train.loop import train

    models = []
    for seed in seeds:
        cfg = train_cfg.model_copy(update={"seed": seed})
        models.append(train(dataset, user.per_seed(model_cfg), cfg, progress=progress).model)
    params, buffers = stack_module_state(models)
    for value in params.values():
        value.requires_grad_(False)
    return Ensemble(copy.deepcopy(models[0]).to("meta"), params, buffers, list(seeds))
