"""The Scores table: per-example scores with provenance, and subset selection.

A scores file is a parquet table with columns ``index``, ``score``, ``label``
(plus per-seed columns such as ``score_seed0``) and, in the parquet schema
metadata under ``datapruning``, a JSON record of how it was made: metric,
parameters, dataset name/params/fingerprint, model, seeds, seconds spent and
library version. Larger scores mean harder / more informative examples.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datapruning._io import atomic_path
from datapruning.errors import DataPruningError, FingerprintMismatchError, UnknownNameError

METADATA_KEY = b"datapruning"

# hard: keep the highest scores; easy: the lowest; random: a seeded uniform draw.
STRATEGIES = ("hard", "easy", "random")


@dataclass
class Scores:
    table: pd.DataFrame
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = {"index", "score", "label"} - set(self.table.columns)
        if missing:
            raise DataPruningError(f"scores table lacks columns {sorted(missing)}")
        scores = self.table["score"].to_numpy()
        if not np.all(np.isfinite(scores)):
            raise DataPruningError("scores contain NaN or inf; rescore the dataset")

    @property
    def fingerprint(self) -> str | None:
        return self.metadata.get("dataset", {}).get("fingerprint")

    @property
    def values(self) -> np.ndarray:
        return self.table["score"].to_numpy()

    def __len__(self) -> int:
        return len(self.table)

    def check_dataset(self, fingerprint: str) -> None:
        """Refuse scores computed on a different training set."""
        if self.fingerprint != fingerprint:
            raise FingerprintMismatchError(
                f"scores belong to dataset {self.fingerprint}, not to this one ({fingerprint}); "
                "score this dataset first"
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table and its metadata atomically as parquet."""
        table = pa.Table.from_pandas(self.table, preserve_index=False)
        metadata = dict(table.schema.metadata or {})
        metadata[METADATA_KEY] = json.dumps(self.metadata).encode()
        table = table.replace_schema_metadata(metadata)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], fingerprint: str | None = None) -> Scores:
        """Read a scores file; with ``fingerprint``, refuse one from another dataset."""
        path = Path(path)
        if not path.is_file():
            raise DataPruningError(f"scores file {str(path)!r} not found")
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError):
            raise DataPruningError(f"{str(path)!r} is not a parquet scores file") from None
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise DataPruningError(
                f"{str(path)!r} has no datapruning metadata; write it with `datapruning score`"
            )
        scores = cls(table.to_pandas(), json.loads(raw))
        if fingerprint is not None:
            scores.check_dataset(fingerprint)
        return scores

    def select(self, keep: float, strategy: str = "hard", seed: int = 0) -> np.ndarray:
        """Dataset indices of the kept examples (see :func:`select`)."""
        return self.table["index"].to_numpy()[select(self.values, keep, strategy, seed)]


def select(scores: np.ndarray, keep: float, strategy: str = "hard", seed: int = 0) -> np.ndarray:
    """Positions of the ``round(keep * N)`` kept examples, sorted ascending.

    ``hard`` keeps the largest scores, ``easy`` the smallest (ties broken by
    position), ``random`` a uniform draw seeded by ``seed``.
    """
    if strategy not in STRATEGIES:
        raise UnknownNameError("selection strategy", strategy, STRATEGIES)
    if not 0 < keep <= 1:
        raise DataPruningError(f"kept fraction {keep} must lie in (0, 1]")
    scores = np.asarray(scores)
    if not np.all(np.isfinite(scores)):
        raise DataPruningError("scores contain NaN or inf; rescore the dataset")
    count = max(1, round(keep * len(scores)))
    if strategy == "random":
        chosen = np.random.default_rng(seed).choice(len(scores), size=count, replace=False)
    else:
        order = np.argsort(-scores if strategy == "hard" else scores, kind="stable")
        chosen = order[:count]
    return np.sort(chosen).astype(np.int64)
