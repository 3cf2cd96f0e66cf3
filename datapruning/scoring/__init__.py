"""Scoring a dataset with a pruning metric: :func:`score`, and :func:`prepare` for shards.

The metrics sit behind one registry (:mod:`datapruning.scoring.registry`, shaped
like the dataset sources'), which the config, the CLI's ``--metric`` help, the
pipeline's seed-group fan-out and :func:`score` all read: a new metric is one
entry plus its module. The registry imports no config; this module reads the
config's sections only when it scores.

``work_dir`` holds per-seed results as they finish, so an interrupted run
resumes and recomputes only what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from datapruning.scoring.registry import (
    METRICS,
    SEED_GROUP_METRICS,
    SHARDABLE_METRICS,
    Metric,
    check_shardable,
    get_metric,
    resolve,
)

if TYPE_CHECKING:
    from torch import nn

    from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
    from datapruning.data.dataset import Dataset
    from datapruning.scores import Scores
    from datapruning.scoring._common import MetricJob, Shard
    from datapruning.user import ModelSpec


def _job(
    dataset: Any,
    metric: str | None,
    scoring: ScoringConfig | None,
    model: ModelConfig | nn.Module | Callable[[], nn.Module] | None,
    train: TrainConfig | None,
    progress: bool | None,
    work_dir: str | os.PathLike[str] | None,
    shard: Shard | str | None,
    seeds: Sequence[int] | None = None,
) -> tuple[Metric, MetricJob]:
    from datapruning.config import ScoringConfig, TrainConfig
    from datapruning.scoring._common import MetricJob, Shard
    from datapruning.user import as_dataset, resolve_model

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
    train = train or TrainConfig()
    job = MetricJob(
        dataset=dataset,
        scoring=scoring,
        params=scoring.params_for(name),
        # The default model at its width for the scoring models' device, recorded as such.
        model=resolve_model(scoring_model(scoring, model), dataset, train.device),
        train=train,
        progress=progress,
        work_dir=work_dir,
        shard=shard,
        seeds=None if seeds is None else frozenset(seeds),
    )
    return entry, job


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
    seeds: Sequence[int] | None = None,
) -> Scores:
    """Score every training example of ``dataset`` with ``metric`` (default: scoring.metric).

    ``scoring`` holds the driver's settings and, under ``params.<metric>``, the
    metric's own; ``model`` is a :class:`ModelConfig` of a registered model, or your
    own ``nn.Module`` or a factory returning one (:mod:`datapruning.user`: a module is
    re-initialised per seed); ``scoring.model``, when set, scores instead (a small
    proxy of the student); ``dataset`` may also be ``(x, y)`` arrays or a torch
    Dataset of ``(x, y)`` items (:func:`datapruning.user.as_dataset`); ``train`` is the
    scoring models' optimiser recipe. ``progress``: None a bar on a terminal, else a
    line per epoch and per finished model on stderr (:mod:`datapruning._progress`);
    False nothing.

    ``shard`` (``"i/n"``, 1-based, or a :class:`~datapruning.scoring._common.Shard`)
    scores only that contiguous block of rows, reading what the shards share
    (trained models, centroids) from ``work_dir`` or computing and saving it
    there; :func:`~datapruning.scoring._common.merge_shards` joins the shards.

    ``seeds`` computes and saves in ``work_dir`` only those seeds of a seed-group
    metric (None: every seed): a fan-out scores each seed group on its own worker,
    then one call without ``seeds`` finds them all saved and writes the scores.
    Restricted, the result holds only the seeds done so far.

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
    entry, job = _job(dataset, metric, scoring, model, train, progress, work_dir, shard, seeds)
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
    seeds: Sequence[int] | None = None,
) -> float:
    """Compute and save in ``work_dir`` what the shards of a scoring share; its seconds.

    Trained seed groups for el2n/grand (only those holding ``seeds``, when given),
    the encoder and centroids for proto. Shards find it there instead of computing it.
    """
    entry, job = _job(dataset, metric, scoring, model, train, progress, work_dir, None, seeds)
    check_shardable(entry.name)
    assert entry.prepare is not None
    return float(resolve(entry.prepare)(job))


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
