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
from typing import TYPE_CHECKING, Any

from datapruning.errors import DataPruningError, UnknownNameError
from datapruning.scoring.params import GrandParams, MetricParams, NoParams, ProtoParams

if TYPE_CHECKING:
    from torch import nn

    from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
    from datapruning.data.sources import Dataset
    from datapruning.scores import Scores
    from datapruning.scoring._common import MetricJob, Shard
    from datapruning.user import ModelSpec


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
    # "module:function" that computes and saves in the work dir what every shard of
    # a sharded scoring reads (trained models, centroids), ``fn(job) -> seconds``;
    # None: the metric cannot be split by example (``--shard`` is refused).
    prepare: str | None = None

    @property
    def function(self) -> Callable[..., Scores]:
        return _resolve(self.target)

    @property
    def shardable(self) -> bool:
        return self.prepare is not None


def _resolve(target: str) -> Callable[..., Any]:
    module, function = target.split(":")
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
            prepare="datapruning.scoring.driver:prepare_models",
        ),
        Metric(
            "grand",
            "per-example loss-gradient norm, all parameters or the last layer "
            "(scoring.params.grand.layer; Paul et al. 2021)",
            GrandParams,
            "datapruning.scoring.grand:score_grand",
            seed_groups=True,
            prepare="datapruning.scoring.driver:prepare_models",
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
            prepare="datapruning.scoring.prototypes:prepare_proto",
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
SHARDABLE_METRICS = frozenset(name for name, metric in METRICS.items() if metric.shardable)


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownNameError("metric", name, METRICS) from None


def _job(
    dataset: Any,
    metric: str | None,
    scoring: ScoringConfig | None,
    model: ModelConfig | nn.Module | Callable[[], nn.Module] | None,
    train: TrainConfig | None,
    progress: bool | None,
    work_dir: str | os.PathLike[str] | None,
    shard: Shard | str | None,
) -> tuple[Metric, MetricJob]:
    from datapruning.config import ScoringConfig, TrainConfig
    from datapruning.scoring._common import MetricJob, Shard
    from datapruning.user import as_dataset

    scoring = scoring or ScoringConfig()
    name = metric or scoring.metric
    entry = get_metric(name)
    if scoring.metric != name:
        scoring = scoring.model_copy(update={"metric": name})
    if isinstance(shard, str):
        shard = Shard.parse(shard)
    if shard is not None:
        check_shardable(name)
    dataset = as_dataset(dataset)
    if shard is not None:
        shard.rows(dataset.num_train)  # refuses more shards than examples
    job = MetricJob(
        dataset=dataset,
        scoring=scoring,
        params=scoring.params_for(name),
        model=scoring_model(scoring, model),
        train=train or TrainConfig(),
        progress=progress,
        work_dir=work_dir,
        shard=shard,
    )
    return entry, job


# Why a metric cannot be split by example.
_UNSHARDABLE = {
    "forgetting": "is counted while its models train, so it cannot be split by example; "
    "score it unsharded (its seed groups still fan out: scoring.ensemble_size)",
    "": "has no per-example pass to split; score it unsharded",
}


def check_shardable(metric: str) -> None:
    """Refuse ``--shard`` for a metric without a per-example pass to split."""
    if not get_metric(metric).shardable:
        why = _UNSHARDABLE.get(metric, _UNSHARDABLE[""])
        raise DataPruningError(f"--shard: {metric} {why}")


def scoring_model(
    scoring: ScoringConfig, model: ModelConfig | nn.Module | Callable[[], nn.Module] | None
) -> ModelSpec:
    """The model that scores: ``scoring.model`` when set (a proxy), else ``model`` (the
    student's), else the dataset's default."""
    from datapruning.config import ModelConfig

    if scoring.model is not None:
        return scoring.model
    return model if model is not None else ModelConfig()


def score(
    dataset: Dataset,
    metric: str | None = None,
    scoring: ScoringConfig | None = None,
    model: ModelConfig | nn.Module | Callable[[], nn.Module] | None = None,
    train: TrainConfig | None = None,
    *,
    progress: bool | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    shard: Shard | str | None = None,
) -> Scores:
    """Score every training example of ``dataset`` with ``metric`` (default: scoring.metric).

    ``scoring`` holds the driver's settings and, under ``params.<metric>``, the
    metric's own; ``model`` is a :class:`ModelConfig` of a registered model, or your
    own ``nn.Module`` or a factory returning one (:mod:`datapruning.user`: a module is
    re-initialised per seed); ``scoring.model``, when set, scores instead (a small
    proxy of the student); ``dataset`` may also be ``(x, y)`` arrays or a torch
    Dataset of ``(x, y)`` items (:func:`datapruning.user.as_dataset`); ``train`` is the
    scoring models' optimiser recipe.

    ``shard`` (``"i/n"``, 1-based, or a :class:`~datapruning.scoring._common.Shard`)
    scores only that contiguous block of rows, reading what the shards share
    (trained models, centroids) from ``work_dir`` or computing and saving it
    there; :func:`~datapruning.scoring._common.merge_shards` joins the shards.

    Example (two small scoring models on 120 examples, a few seconds on a CPU)::

        >>> import numpy as np
        >>> from datapruning import ScoringConfig, as_dataset, score, select
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(120, 8)).astype("float32"), np.arange(120) % 3
        >>> data = as_dataset((x, y), test=(x[:30], y[:30]))
        >>> scores = score(data, "el2n", ScoringConfig(seeds=2, epochs=2))
        >>> len(scores), scores.metadata["metric"], scores.fingerprint == data.fingerprint
        (120, 'el2n', True)
        >>> len(select(scores, 0.25, "hard"))
        30
    """
    entry, job = _job(dataset, metric, scoring, model, train, progress, work_dir, shard)
    scores = entry.function(job)
    # Which model scored: a proxy from scoring.model, or the student's own model.
    if scores.metadata.get("model") is not None:
        scores.metadata["model_source"] = "scoring.model" if job.scoring.model else "model"
    return scores


def prepare(
    dataset: Dataset,
    metric: str | None = None,
    scoring: ScoringConfig | None = None,
    model: ModelConfig | nn.Module | Callable[[], nn.Module] | None = None,
    train: TrainConfig | None = None,
    *,
    progress: bool | None = None,
    work_dir: str | os.PathLike[str],
) -> float:
    """Compute and save in ``work_dir`` what the shards of a scoring share; its seconds.

    Trained seed groups for el2n/grand (only those of
    :func:`~datapruning.scoring._common.only_seeds` inside that block), the
    encoder and centroids for proto. Shards find it there instead of computing it.
    """
    entry, job = _job(dataset, metric, scoring, model, train, progress, work_dir, None)
    check_shardable(entry.name)
    assert entry.prepare is not None
    return float(_resolve(entry.prepare)(job))


__all__ = [
    "METRICS",
    "SEED_GROUP_METRICS",
    "SHARDABLE_METRICS",
    "Metric",
    "check_shardable",
    "get_metric",
    "prepare",
    "score",
    "scoring_model",
]
