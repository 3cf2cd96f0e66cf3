"""datapruning: score a training set, keep a subset, train on it sooner.

The public API is the names here. The four steps: :func:`score` (every
training example by a metric, into a :class:`Scores`), :func:`select` (a
:class:`Scores` or a scores file in, the kept dataset indices out), ``train``
(one model, optionally on a subset, with KD, pruning or InfoBatch; see
:func:`datapruning.train.loop.train`) and :func:`run` (a whole experiment
config: teachers, scores, students, report). The samplers (:class:`SubsetSampler`,
:class:`RS2Sampler`, :class:`InfoBatchSampler`) fit your own loop;
:func:`as_dataset`, :func:`fingerprint` and :func:`with_index` bring your own data.
Their settings are the config classes (:class:`TrainConfig`, :class:`ModelConfig`,
:class:`ScoringConfig`, ...). Other modules are documented where they say so
(``datapruning.train.run``, ``datapruning.train.loop``) and otherwise internal.

Names are imported on first use, so ``import datapruning`` (and the CLI's
``--help``) does not pay for torch, pandas and pyarrow until they are needed.
``datapruning.train`` is the training package, callable as the function.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "DataPruningError": "datapruning.errors",
    "Dataset": "datapruning.data.dataset",
    "PipelineConfig": "datapruning.config",
    "SOURCES": "datapruning.data.sources",
    "Scores": "datapruning.scores",
    "IndexSampler": "datapruning.data.samplers",
    "InfoBatchSampler": "datapruning.data.infobatch",
    "MagnitudePruner": "datapruning.train.sparsity",
    "RS2Sampler": "datapruning.data.samplers",
    "SparsityConfig": "datapruning.config",
    "GradualMagnitude": "datapruning.config",
    "OneShotNM": "datapruning.config",
    "DynamicNM": "datapruning.config",
    "sparsity_config": "datapruning.config",
    "SubsetSampler": "datapruning.data.samplers",
    "as_dataset": "datapruning.user",
    "export_sparse": "datapruning.train.sparsity",
    "load_config": "datapruning.config",
    "load_dataset": "datapruning.data.sources",
    "save_teacher_logits": "datapruning.train.kd",
    "select": "datapruning.scores",
    "score": "datapruning.scoring",
    "run": "datapruning.api",
    "train": "datapruning.train",
    "fingerprint": "datapruning.user",
    "with_index": "datapruning.user",
    "DataConfig": "datapruning.config",
    "DatasetConfig": "datapruning.config",
    "KDConfig": "datapruning.config",
    "ModelConfig": "datapruning.config",
    "ScoringConfig": "datapruning.config",
    "TrainConfig": "datapruning.config",
    "TrainResult": "datapruning.train.loop",
}

if TYPE_CHECKING:
    from datapruning.api import run
    from datapruning.config import (
        DataConfig,
        DatasetConfig,
        DynamicNM,
        GradualMagnitude,
        KDConfig,
        ModelConfig,
        OneShotNM,
        PipelineConfig,
        ScoringConfig,
        SparsityConfig,
        TrainConfig,
        load_config,
        sparsity_config,
    )
    from datapruning.data.dataset import Dataset
    from datapruning.data.infobatch import InfoBatchSampler
    from datapruning.data.samplers import IndexSampler, RS2Sampler, SubsetSampler
    from datapruning.data.sources import SOURCES, load_dataset
    from datapruning.errors import DataPruningError
    from datapruning.scores import Scores, select
    from datapruning.scoring import score
    from datapruning.train.kd import save_teacher_logits
    from datapruning.train.loop import TrainResult, train
    from datapruning.train.sparsity import MagnitudePruner, export_sparse
    from datapruning.user import as_dataset, fingerprint, with_index


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'datapruning' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    # The train package is callable as its function; importing it binds the package here.
    return module if name == "train" else getattr(module, name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "SOURCES",
    "DataConfig",
    "DataPruningError",
    "Dataset",
    "DatasetConfig",
    "DynamicNM",
    "GradualMagnitude",
    "IndexSampler",
    "InfoBatchSampler",
    "KDConfig",
    "MagnitudePruner",
    "ModelConfig",
    "OneShotNM",
    "PipelineConfig",
    "RS2Sampler",
    "Scores",
    "ScoringConfig",
    "SparsityConfig",
    "SubsetSampler",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "as_dataset",
    "export_sparse",
    "fingerprint",
    "load_config",
    "load_dataset",
    "run",
    "save_teacher_logits",
    "score",
    "select",
    "sparsity_config",
    "train",
    "with_index",
]
