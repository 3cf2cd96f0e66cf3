"""Each metric's own settings, one pydantic model per metric (``scoring.params.<metric>``).

The shared ``scoring`` section keeps only what the trained-model driver
(:mod:`datapruning.scoring.driver`) applies to every metric that trains scoring
models (seeds, epochs, batching); a setting that only one metric reads lives
here, beside that metric's registry entry, so adding a metric with settings
touches its own module and the registry, not config.py and the CLI. This module
imports only pydantic, so validating a config never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from datapruning._sections import Section, Seed


class MetricParams(Section):
    """Base of the metrics' params models: unknown keys are errors that name the key."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoParams(MetricParams):
    """A metric without settings of its own."""


class GrandParams(MetricParams):
    # Gradient norm over all parameters (the paper) or the last linear layer only (DeepCore).
    layer: Literal["all", "last"] = "all"


class ProtoParams(MetricParams):
    """Self-supervised prototypes (Sorscher et al. 2022): embed, cluster, score by distance."""

    # Clusters (None: the dataset's number of classes, else sqrt(N)/2 capped at 1000).
    k: int | None = Field(None, ge=1)
    # faiss k-means iterations.
    niter: int = Field(25, ge=1)
    # User embeddings (.npy, one row per training example) instead of the encoder.
    embeddings: Path | None = None
    # The SimCLR-style encoder trained here when no embeddings are given.
    encoder_epochs: int = Field(30, ge=1)
    embedding_dim: int = Field(64, ge=2)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    temperature: float = Field(0.1, gt=0)
    seed: Seed = 0
