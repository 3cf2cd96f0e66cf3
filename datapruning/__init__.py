"""datapruning: score a training set, keep a subset, train on it sooner.

The public API lives here; submodules not re-exported are private. Names are
imported on first use, so ``import datapruning`` (and the CLI's ``--help``)
does not pay for torch, pandas and pyarrow until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "DataPruningError": "datapruning.errors",
    "Dataset": "datapruning.data.sources",
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
}

if TYPE_CHECKING:
    from datapruning.config import (
        DynamicNM,
        GradualMagnitude,
        OneShotNM,
        PipelineConfig,
        SparsityConfig,
        load_config,
        sparsity_config,
    )
    from datapruning.data.infobatch import InfoBatchSampler
    from datapruning.data.samplers import IndexSampler, RS2Sampler, SubsetSampler
    from datapruning.data.sources import SOURCES, Dataset, load_dataset
    from datapruning.errors import DataPruningError
    from datapruning.scores import Scores, select
    from datapruning.train.kd import save_teacher_logits
    from datapruning.train.sparsity import MagnitudePruner, export_sparse
    from datapruning.user import as_dataset


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'datapruning' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "SOURCES",
    "DataPruningError",
    "Dataset",
    "DynamicNM",
    "GradualMagnitude",
    "IndexSampler",
    "InfoBatchSampler",
    "MagnitudePruner",
    "OneShotNM",
    "PipelineConfig",
    "RS2Sampler",
    "Scores",
    "SparsityConfig",
    "SubsetSampler",
    "__version__",
    "as_dataset",
    "export_sparse",
    "load_config",
    "load_dataset",
    "save_teacher_logits",
    "select",
    "sparsity_config",
]
