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
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_serializer, field_validator, model_validator

from datapruning._sections import Section, Seed


class MetricParams(Section):
    """Base of the metrics' params models: unknown keys are errors that name the key."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoParams(MetricParams):
    """A metric without settings of its own."""


class GrandParams(MetricParams):
    # Gradient norm over all parameters (the paper) or the last linear layer only (DeepCore).
    layer: Literal["all", "last"] = "all"


# The encoder's default budget in optimizer steps (batches of ``batch_size``), the
# same for every N (capped at 30 epochs' worth on small sets, prototypes.py): the
# smallest budget whose scores agree with the old 30-epoch recipe's as well as that
# recipe agrees with itself across encoder seeds (Spearman 0.62 against 0.61 at 20k
# MNIST-1D examples; bench/results/proto_scale.json, "budget" and "quality").
DEFAULT_ENCODER_STEPS = 500


class ProtoParams(MetricParams):
    """Self-supervised prototypes (Sorscher et al. 2022): embed, cluster, score by distance."""

    # A user's nn.Module (Python API) is a value here, not a config key.
    model_config = ConfigDict(arbitrary_types_allowed=True)

    # Clusters (None: the dataset's number of classes, else sqrt(N)/2 capped at 1000).
    k: int | None = Field(None, ge=1)
    # faiss k-means iterations.
    niter: int = Field(25, ge=1)
    # User embeddings (.npy, one row per training example) instead of the encoder.
    embeddings: Path | None = None
    # An encoder you already have instead of training one: a checkpoint of a model
    # this project trained (checkpoint.pt of ``datapruning train``, or its run
    # directory; its penultimate features), or, in the Python API, an nn.Module
    # whose outputs are the embedding.
    encoder: Any = None
    # The SimCLR-style encoder trained here otherwise: ``encoder_steps`` optimizer
    # steps on seeded batches, whatever N (None: DEFAULT_ENCODER_STEPS; then one
    # no-grad pass embeds every example); or ``encoder_epochs`` epochs over every
    # example (the recipe before the step budget: 30 epochs, a cost that grows with N).
    encoder_steps: int | None = Field(None, ge=1)
    encoder_epochs: int | None = Field(None, ge=1)
    embedding_dim: int = Field(64, ge=2)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    temperature: float = Field(0.1, gt=0)
    # Rows embedded (and assigned to their centroid) per no-grad chunk.
    embed_batch_size: int = Field(4096, ge=1)
    # Nearest-centroid search: exact (faiss IndexFlatIP), or hnsw (faiss IndexHNSWFlat,
    # approximate; for very large k, see prototypes.py for the measurement).
    index: Literal["exact", "hnsw"] = "exact"
    seed: Seed = 0

    @field_validator("encoder", mode="before")
    @classmethod
    def _encoder(cls, value: Any) -> Any:
        if value is None or isinstance(value, Path):
            return value
        if isinstance(value, str):
            return Path(value)
        # An nn.Module, recognised without importing torch.
        if callable(getattr(value, "forward", None)) and callable(
            getattr(value, "state_dict", None)
        ):
            return value
        raise ValueError(
            f"give a checkpoint path (checkpoint.pt of `datapruning train`) or an nn.Module, "
            f"not {type(value).__name__}"
        )

    @field_serializer("encoder", when_used="json")
    def _encoder_identity(self, value: Any) -> str | None:
        """JSON (cache keys, provenance): the path, or the module's class and weights hash."""
        if value is None or isinstance(value, Path):
            return None if value is None else str(value)
        from datapruning.user import weights_hash

        kind = type(value)
        return f"module:{kind.__module__}.{kind.__qualname__}:{weights_hash(value)}"

    @model_validator(mode="after")
    def _one_source(self) -> ProtoParams:
        if self.encoder is not None and self.embeddings is not None:
            raise ValueError("give embeddings or encoder, not both")
        if self.encoder_epochs is not None and self.encoder_steps is not None:
            raise ValueError(
                "give encoder_steps (a budget that does not grow with N) or encoder_epochs, "
                "not both"
            )
        return self

    @property
    def steps(self) -> int | None:
        """The encoder's step budget (None: ``encoder_epochs`` passes instead)."""
        if self.encoder_epochs is not None:
            return None
        return self.encoder_steps if self.encoder_steps is not None else DEFAULT_ENCODER_STEPS
