"""The metric registry: each pruning metric's name, help, params model and functions.

Kept apart from the scoring code and from :mod:`datapruning.config`, which needs
these names at import to validate ``scoring.metric`` (and the CLI for its
``--metric`` help): this module imports no config, so the config imports it
without importing the metrics (or torch), and the metrics import the config
without a circle. A :class:`Metric` entry pairs a name with its one-line help,
its own params model (``scoring.params.<name>``, :mod:`datapruning.scoring.params`)
and the function that computes it, ``fn(job: MetricJob) -> Scores``, where larger
scores mean harder / more informative examples; a new metric is one entry plus
its module (DeepCore's ``methods/`` are shaped the same way).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datapruning.errors import DataPruningError, UnknownNameError
from datapruning.scoring.params import GrandParams, MetricParams, NoParams, ProtoParams

if TYPE_CHECKING:
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
    # "module:function" that computes and saves in the work dir what every shard of
    # a sharded scoring reads (trained models, centroids), ``fn(job) -> seconds``;
    # None: the metric cannot be split by example (``--shard`` is refused).
    prepare: str | None = None
    # A full-data training run can record it as it trains (``train.record``), so a
    # pipeline with ``scoring.source: runs`` reads it from the reference and teacher
    # runs instead of training scoring models.
    recorded: bool = False

    @property
    def function(self) -> Callable[..., Scores]:
        return resolve(self.target)

    @property
    def shardable(self) -> bool:
        return self.prepare is not None


def resolve(target: str) -> Callable[..., Any]:
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
            recorded=True,
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
            recorded=True,
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
RECORDED_METRICS = frozenset(name for name, metric in METRICS.items() if metric.recorded)


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownNameError("metric", name, METRICS) from None


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
