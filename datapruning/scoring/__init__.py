"""Pruning metrics behind a name registry.

Each metric is a function ``score(dataset, scoring, model_cfg, train_cfg,
progress=None, work_dir=None) -> Scores`` where larger scores mean harder / more
informative examples. ``work_dir`` holds per-seed results as they finish, so an
interrupted run resumes and recomputes only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datapruning.errors import UnknownNameError

# Names map to "module:function" so that listing metrics imports no torch code.
METRICS: dict[str, str] = {
    "el2n": "datapruning.scoring.el2n:score_el2n",
    "grand": "datapruning.scoring.grand:score_grand",
    "forgetting": "datapruning.scoring.forgetting:score_forgetting",
    "proto": "datapruning.scoring.prototypes:score_proto",
    "random": "datapruning.scoring.random:score_random",
}

# Metrics computed per group of seeds (scoring.ensemble_size seeds at a time): a
# pipeline fans their groups out to workers and merges them (datapruning.orchestration).
SEED_GROUP_METRICS = frozenset({"el2n", "grand", "forgetting"})

# One line per metric: what it computes and where the recipe comes from.
METRIC_HELP: dict[str, str] = {
    "el2n": "||softmax(f(x)) - onehot(y)||2 after a few epochs, mean over seeds (Paul et al. 2021)",
    "grand": "per-example loss-gradient norm, all parameters or the last layer "
    "(scoring.grand_layer; Paul et al. 2021)",
    "forgetting": "learned->forgotten transitions during training, never-learned hardest "
    "(Toneva et al. 2019)",
    "proto": "cosine distance to the nearest faiss k-means centroid of self-supervised "
    "embeddings; reads no labels (Sorscher et al. 2022)",
    "random": "uniform random scores: the baseline every metric must beat",
}


def get_metric(name: str) -> Callable[..., Any]:
    import importlib

    try:
        target = METRICS[name]
    except KeyError:
        raise UnknownNameError("metric", name, METRICS) from None
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


__all__ = ["METRICS", "METRIC_HELP", "get_metric"]
