"""EL2N scores (Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data Diet").

EL2N(x, y) = || softmax(f(x)) - onehot(y) ||_2, computed with models trained
only briefly (the paper scores at epoch ~20 of 200 on CIFAR-10) and averaged over
several independently initialised models (the paper uses 10; the default here is
smaller for CPU and configurable). Examples with a large error early in training
are the hard (or mislabeled) ones.

The K scoring models train at once as a batched ensemble
(:mod:`datapruning.scoring.ensemble`, ``scoring.batched=true``, the default) or
one after another through the training loop (``batched=false``); both follow the
same recipe and seeds. Each group of ``scoring.ensemble_size`` seeds is saved to
``work_dir`` as it finishes, so an interrupted run resumes with the missing seeds.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datapruning.config import (
    DataConfig,
    ModelConfig,
    ScoringConfig,
    SparsityConfig,
    TrainConfig,
)
from datapruning.data.sources import Dataset
from datapruning.scores import Scores
from datapruning.scoring._common import SeedStore, build_scores, check_features, check_labels
from datapruning.scoring.ensemble import (
    Ensemble,
    build_models,
    can_batch,
    ensemble_threads,
    train_ensemble,
)

# Scores of one trained ensemble: (K, N) for the ensemble's seeds.
EnsembleScorer = Callable[[Ensemble, torch.Tensor, torch.Tensor], torch.Tensor]


def el2n(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm of the softmax error vector (over the last dim)."""
    probs = F.softmax(logits, dim=-1)
    return torch.linalg.vector_norm(probs - F.one_hot(labels, probs.shape[-1]).to(probs), dim=-1)


def _el2n_of(ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = ensemble.predict(x)
    return el2n(logits, y.expand(len(ensemble), -1))


def score_el2n(
    dataset: Dataset,
    scoring: ScoringConfig | None = None,
    model_cfg: ModelConfig | None = None,
    train_cfg: TrainConfig | None = None,
    progress: bool | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> Scores:
    """Train ``scoring.seeds`` models for ``scoring.epochs`` epochs each and average EL2N."""
    return score_with_models(
        "el2n", _el2n_of, dataset, scoring, model_cfg, train_cfg, progress, work_dir
    )


def scoring_train_config(train_cfg: TrainConfig, epochs: int) -> TrainConfig:
    """The recipe of a scoring model: ``train_cfg``'s optimiser, dense, on every example.

    Scoring models see every example for ``epochs`` epochs, whatever the
    config's data mode, step budget or sparsity say about students.
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
        }
    )


# Scores of one group of seeds, (len(group), N), given the group, the scoring
# models' recipe (scoring_train_config) and whether the group trains batched.
GroupScorer = Callable[[list[int], TrainConfig, bool], np.ndarray]


def score_seed_groups(
    metric: str,
    compute: GroupScorer,
    dataset: Dataset,
    scoring: ScoringConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig | None,
    progress: bool | None,
    work_dir: str | os.PathLike[str] | None,
    extra_params: dict[str, Any] | None = None,
) -> Scores:
    """A metric computed by scoring models, per group of seeds (batched or one by one).

    Checks the inputs, records the recipe, and resumes from the groups a
    previous run saved in ``work_dir``; keeps per-seed columns.
    """
    train_cfg = scoring_train_config(train_cfg or TrainConfig(), scoring.epochs)
    check_features(dataset.x_train)
    check_labels(dataset)
    model = {"name": model_cfg.name or dataset.default_model, "params": model_cfg.params}
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
    store = SeedStore(work_dir, identity | {"params": params})
    seeds = list(range(scoring.seeds))
    group = scoring.ensemble_size if batched else 1
    done = store.run(
        seeds,
        dataset.num_train,
        group,
        lambda chunk: compute(chunk, train_cfg, batched),
        metric,
        progress,
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
    dataset: Dataset,
    scoring: ScoringConfig | None,
    model_cfg: ModelConfig | None,
    train_cfg: TrainConfig | None,
    progress: bool | None,
    work_dir: str | os.PathLike[str] | None,
    extra_params: dict[str, Any] | None = None,
) -> Scores:
    """Train scoring models per seed (batched or not), then score each with ``scorer``."""
    scoring = scoring or ScoringConfig()
    model_cfg = model_cfg or ModelConfig()

    def compute(chunk: list[int], recipe: TrainConfig, batched: bool) -> np.ndarray:
        ensemble = _train(dataset, model_cfg, recipe, scoring, chunk, batched, metric, progress)
        x = torch.as_tensor(dataset.x_train, device=recipe.device)
        y = torch.as_tensor(dataset.y_train, device=recipe.device)
        with torch.no_grad():
            return scorer(ensemble, x, y).cpu().numpy()

    return score_seed_groups(
        metric, compute, dataset, scoring, model_cfg, train_cfg, progress, work_dir, extra_params
    )


def _train(
    dataset: Dataset,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    scoring: ScoringConfig,
    seeds: Sequence[int],
    batched: bool,
    desc: str,
    progress: bool | None,
) -> Ensemble:
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
        models.append(train(dataset, model_cfg, cfg, progress=progress).model)
    params, buffers = stack_module_state(models)
    for value in params.values():
        value.requires_grad_(False)
    return Ensemble(copy.deepcopy(models[0]).to("meta"), params, buffers, list(seeds))
