"""Pruning metrics behind one registry, shaped like the dataset sources'.

A :class:`Metric` entry pairs a name with its one-line help, its own params
model (``scoring.params.<name>``, :mod:`datapruning.scoring.params`) and the
function that computes it, ``fn(job: MetricJob) -> Scores``, where larger scores
mean harder / more informative examples. The config, the CLI's ``--metric``
help, the pipeline's seed-group fan-out and :func:`score` all read this one
table: a new metric is one entry plus its module.

``work_dir`` holds per-seed results as they finish, so an interrupted run
resumes and recomputes only what is missing.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datapruning.errors import UnknownNameError
from datapruning.scoring.params import GrandParams, MetricParams, NoParams, ProtoParams

if TYPE_CHECKING:
    from torch import nn

    from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
    from datapruning.data.sources import Dataset
    from datapruning.scores import Scores


@dataclass(frozen=True)
class Metric:
    name: str
    # One line: what it computes and where the recipe comes from.
    help: str
    params_model: type[MetricParams]
    # "module:function", imported on first use so that listing metrics imports no torch.
    target: str
    # Computed per group of seeds by trained scoring models (scoring.ensemble_size at a
    # time): a pipeline fans the groups out to workers and merges them.
    seed_groups: bool = False

    @property
    def function(self) -> Callable[..., Scores]:
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(
            "el2n",
            "||softmax(f(x)) - onehot(y)||2 after a few epochs, mean over seeds (Paul et al. 2021)",
            NoParams,
            "datapruning.scoring.el2n:score_el2n",
            seed_groups=True,
        ),
        Metric(
            "grand",
            "per-example loss-gradient norm, all parameters or the last layer "
            "(scoring.params.grand.layer; Paul et al. 2021)",
            GrandParams,
            "datapruning.scoring.grand:score_grand",
            seed_groups=True,
        ),
        Metric(
            "forgetting",
            "learned->forgotten transitions during training, never-learned hardest "
            "(Toneva et al. 2019)",
            NoParams,
            "datapruning.scoring.forgetting:score_forgetting",
            seed_groups=True,
        ),
        Metric(
            "proto",
            "cosine distance to the nearest faiss k-means centroid of self-supervised "
            "embeddings (scoring.params.proto); reads no labels (Sorscher et al. 2022)",
            ProtoParams,
            "datapruning.scoring.prototypes:score_proto",
        ),
        Metric(
            "random",
            "uniform random scores: the baseline every metric must beat",
            NoParams,
            "datapruning.scoring.random:score_random",
        ),
    )
}

SEED_GROUP_METRICS = frozenset(name for name, metric in METRICS.items() if metric.seed_groups)


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownNameError("metric", name, METRICS) from None


def score(
    dataset: Dataset,
    metric: str | None = None,
    scoring: ScoringConfig | None = None,
    model: ModelConfig | nn.Module | Callable[[], nn.Module] | None = None,
    train: TrainConfig | None = None,
    *,
    progress: bool | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> Scores:
    """Score every training example of ``dataset`` with ``metric`` (default: scoring.metric).

    ``scoring`` holds the driver's settings and, under ``params.<metric>``, the
    metric's own; ``model`` is a :class:`ModelConfig` of a registered model, or your
    own ``nn.Module`` or a factory returning one (:mod:`datapruning.user`: a module is
    re-initialised per seed); ``dataset`` may also be ``(x, y)`` arrays or a torch
    Dataset of ``(x, y)`` items (:func:`datapruning.user.as_dataset`); ``train`` is the
    scoring models' optimiser recipe.
    """
    from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
    from datapruning.scoring._common import MetricJob
    from datapruning.user import as_dataset

    dataset = as_dataset(dataset)
    scoring = scoring or ScoringConfig()
    name = metric or scoring.metric
    entry = get_metric(name)
    if scoring.metric != name:
        scoring = scoring.model_copy(update={"metric": name})
    job = MetricJob(
        dataset=dataset,
        scoring=scoring,
        params=scoring.params_for(name),
        model=model if model is not None else ModelConfig(),
        train=train or TrainConfig(),
        progress=progress,
        work_dir=work_dir,
    )
    return entry.function(job)


__all__ = ["METRICS", "SEED_GROUP_METRICS", "Metric", "get_metric", "score"]
