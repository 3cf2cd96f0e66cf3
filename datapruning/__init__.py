"""datapruning: score a training set, keep a subset, train on it sooner.

The public API lives here; submodules not re-exported are private.
"""

from __future__ import annotations

__version__ = "0.1.0"

from datapruning.config import PipelineConfig, load_config
from datapruning.data.samplers import SubsetSampler
from datapruning.data.sources import SOURCES, Dataset, load_dataset
from datapruning.errors import DataPruningError
from datapruning.scores import Scores, select

__all__ = [
    "SOURCES",
    "DataPruningError",
    "Dataset",
    "PipelineConfig",
    "Scores",
    "SubsetSampler",
    "__version__",
    "load_config",
    "load_dataset",
    "select",
]
