"""The dataset of an experiment, loaded once per process, and the size of its full-data run.

Every cell of an experiment reads the same dataset; a worker that runs several
cells keeps one in-memory copy instead of regenerating it for each.
"""

from __future__ import annotations

import functools
import json
import math

from datapruning.config import PipelineConfig
from datapruning.data.dataset import Dataset
from datapruning.data.sources import load_dataset


@functools.cache
def _dataset(name: str, params_json: str) -> Dataset:
    return load_dataset(name, json.loads(params_json))


def dataset_of(cfg: PipelineConfig) -> Dataset:
    return _dataset(cfg.dataset.name, json.dumps(cfg.dataset.params, sort_keys=True))


def full_steps(cfg: PipelineConfig) -> int:
    """The optimizer steps of the experiment's full-data run (train.steps, else its epochs)."""
    if cfg.train.steps is not None:
        return cfg.train.steps
    return cfg.train.epochs * math.ceil(dataset_of(cfg).num_train / cfg.train.batch_size)
