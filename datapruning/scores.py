"""The Scores table: per-example scores with provenance, and subset selection.

A scores file is a parquet table with columns ``index``, ``score``, ``label``
(plus per-seed columns such as ``score_seed0``) and, in the parquet schema
metadata under ``datapruning``, a JSON record of how it was made: metric,
parameters, dataset name/params/fingerprint, model, seeds, seconds spent and
library version, and ``format_version`` (``SCORES_FORMAT``). Larger scores mean
harder / more informative examples.

Format versions: 1 is the layout above. Files written before the version was
recorded have the same layout and are read as version 1; a file of a version
this release does not know (a newer release wrote it) is refused with a message
saying so, rather than read wrongly.
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
SCORES_FORMAT = 1  # the layout of the table and metadata; bump it when either changes

# hard: keep the highest scores; easy: the lowest; random: a seeded uniform draw;
# balanced: the hardest within each class, each class keeping its share;
# ccs: coverage-centric (stratified over score bins, hardest offset dropped);
# auto: hard when data is abundant, easy when scarce (Sorscher et al. 2022).
STRATEGIES = ("hard", "easy", "random", "balanced", "ccs", "auto")

# auto keeps the hardest examples when the kept subset still holds at least this
# many examples per class, else the easiest. Sorscher et al. (2022) show the
# crossover (easy wins when data is scarce, hard when abundant) but give no
# universal number; 100 per class is a rule of thumb: check it on your data.
AUTO_HARD_MIN_PER_CLASS = 100
# CCS (Zheng et al. 2023) splits the score range into this many equal-width bins.
CCS_BINS = 50


@dataclass
class Scores:
    table: pd.DataFrame
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = {"index", "score", "label"} - set(self.table.columns)
        if missing:
            raise DataPruningError(f"scores table lacks columns {sorted(missing)}")
        scores = self.table["score"].to_numpy()
        if not (
            np.issubdtype(scores.dtype, np.integer) or np.issubdtype(scores.dtype, np.floating)
        ):
            raise DataPruningError(
                f"the scores table's 'score' column holds {scores.dtype}, not numbers; "
                "rescore the dataset"
            )
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
        from datapruning.data.fingerprint import check_current

        check_current(
            self.fingerprint, "this scores file", "score the dataset again with `datapruning score`"
        )
        if self.fingerprint != fingerprint:
            raise FingerprintMismatchError(
                f"scores belong to dataset {self.fingerprint}, not to this one ({fingerprint}); "
                "score this dataset first"
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table and its metadata atomically as parquet."""
        table = pa.Table.from_pandas(self.table, preserve_index=False)
        metadata = dict(table.schema.metadata or {})
        record = {**self.metadata, "format_version": SCORES_FORMAT}
        metadata[METADATA_KEY] = json.dumps(record).encode()
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
        try:
            metadata = json.loads(raw)
        except ValueError:
            metadata = None
        if not isinstance(metadata, dict):
            raise DataPruningError(
                f"{str(path)!r} has unreadable datapruning metadata; rescore with "
                "`datapruning score`"
            )
        _check_format(path, metadata.pop("format_version", 1))  # unversioned files are 1
        try:
            scores = cls(table.to_pandas(), metadata)
        except FingerprintMismatchError:
            raise
        except DataPruningError as exc:  # name the file the bad table came from
            raise DataPruningError(f"scores file {str(path)!r}: {exc}") from None
        if fingerprint is not None:
            scores.check_dataset(fingerprint)
        return scores

    def select(
        self,
        keep: float,
        strategy: str = "hard",
        seed: int = 0,
        *,
        offset: float = 0.0,
        bins: int = CCS_BINS,
    ) -> np.ndarray:
        """Dataset indices of the kept examples (see :func:`select`)."""
        labels = self.table["label"].to_numpy()
        chosen = select_positions(
            self.values,
            keep,
            strategy,
            seed,
            labels=labels,
            num_classes=self.num_classes,
            offset=offset,
            bins=bins,
        )
        return self.table["index"].to_numpy()[chosen]

    @property
    def num_classes(self) -> int | None:
        return self.metadata.get("dataset", {}).get("num_classes")

    def strategy_for(self, keep: float, strategy: str) -> str:
        """The strategy :meth:`select` applies: ``auto`` resolved to ``hard`` or ``easy``."""
        if strategy != "auto":
            return strategy
        count = max(1, round(keep * len(self)))
        labels = self.table["label"].to_numpy()
        return auto_strategy(count, _num_classes(labels, self.num_classes, len(self)))


def select(
    scores: Scores | str | os.PathLike[str],
    keep: float,
    strategy: str = "hard",
    seed: int = 0,
    *,
    offset: float = 0.0,
    bins: int = CCS_BINS,
    fingerprint: str | None = None,
) -> np.ndarray:
    """Dataset indices of the ``round(keep * N)`` examples kept by ``strategy``.

    ``scores`` is a :class:`Scores` or the path of a scores file (``datapruning
    score``); with ``fingerprint`` (a dataset's, :func:`datapruning.fingerprint`)
    scores of another dataset are refused. The indices are the dataset's own
    (the table's ``index`` column, in its order), ready for
    :class:`~datapruning.data.samplers.SubsetSampler`, ``torch.utils.data.Subset``
    or ``datapruning train --indices``.

    - ``hard`` keeps the largest scores, ``easy`` the smallest (ties broken by
      position), ``random`` a uniform draw seeded by ``seed``.
    - ``balanced`` keeps the hardest within each class, each class keeping
      ``keep`` of its examples (largest-remainder rounding).
    - ``ccs``, coverage-centric selection (Zheng et al. 2023): drop the hardest
      ``offset`` fraction (likely mislabeled), split the rest into ``bins``
      equal-width score bins, and fill the budget from the smallest bin up, each
      bin giving at most an equal share of what is left (a seeded draw inside).
    - ``auto`` is ``hard`` when the kept subset holds at least
      ``AUTO_HARD_MIN_PER_CLASS`` examples per class (data abundant), else
      ``easy`` (Sorscher et al. 2022); :meth:`Scores.strategy_for` says which.

    Example::

        >>> import numpy as np, pandas as pd
        >>> from datapruning import Scores, select
        >>> table = pd.DataFrame(
        ...     {"index": [10, 11, 12, 13], "score": [0.9, 0.1, 0.5, 0.7], "label": [0, 1, 0, 1]}
        ... )
        >>> select(Scores(table), 0.5, "hard").tolist()
        [10, 13]
        >>> select(Scores(table), 0.5, "easy").tolist()
        [11, 12]
    """
    if not isinstance(scores, Scores):
        if isinstance(scores, str | os.PathLike):
            scores = Scores.load(scores, fingerprint=fingerprint)
        else:
            raise DataPruningError(
                f"select takes a Scores or the path of a scores file, not "
                f"{type(scores).__name__}; for an array of scores use "
                "datapruning.scores.select_positions"
            )
    elif fingerprint is not None:
        scores.check_dataset(fingerprint)
    return scores.select(keep, strategy, seed, offset=offset, bins=bins)


# The sidecar `datapruning select` writes beside the indices (OUT.npy.json): where they came
# from and what the scoring behind them cost, which `datapruning train --indices` charges.
SELECTION_FORMAT = 1


def selection_path(indices: str | os.PathLike[str]) -> Path:
    """The provenance sidecar of an indices file: ``idx.npy`` -> ``idx.npy.json``."""
    return Path(f"{os.fspath(indices)}.json")


def selection_record(
    scores: Scores,
    source: str | os.PathLike[str],
    kept: int,
    keep: float,
    strategy: str,
    seed: int,
    *,
    offset: float = 0.0,
    bins: int = CCS_BINS,
) -> dict[str, Any]:
    """What a selection came from: the scores file, its metric and cost, and the strategy
    applied (``auto`` resolved to ``hard`` or ``easy``)."""
    from datapruning import __version__

    applied = scores.strategy_for(keep, strategy)
    dataset = scores.metadata.get("dataset", {})
    return {
        "format_version": SELECTION_FORMAT,
        "scores": str(Path(source).resolve()),
        "metric": scores.metadata.get("metric"),
        "scoring_seconds": float(scores.metadata.get("seconds") or 0.0),
        "strategy": strategy,
        "applied_strategy": applied,
        "keep": keep,
        "kept": kept,
        "of": len(scores),
        "seed": seed,
        **({"offset": offset, "bins": bins} if applied == "ccs" else {}),
        "dataset": {"name": dataset.get("name"), "fingerprint": scores.fingerprint},
        "version": __version__,
    }


def read_selection(indices: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance sidecar of an indices file (:func:`selection_record`), or None if it
    has none (indices made some other way)."""
    path = selection_path(indices)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("scoring_seconds"), int | float):
        raise DataPruningError(
            f"{str(path)!r} is not a selection record; select again with `datapruning select`, "
            "or delete it to train on the indices without their scoring cost"
        )
    version = record.get("format_version")
    if version != SELECTION_FORMAT:
        raise DataPruningError(
            f"{str(path)!r} has selection format {version!r}, this datapruning reads "
            f"{SELECTION_FORMAT}; select again with `datapruning select`"
        )
    return record


def check_selection(
    record: dict[str, Any], indices: str | os.PathLike[str], fingerprint: str
) -> None:
    """Refuse indices selected from another dataset's scores."""
    found = (record.get("dataset") or {}).get("fingerprint")
    if found is not None and found != fingerprint:
        raise FingerprintMismatchError(
            f"indices {os.fspath(indices)!r} were selected from scores of dataset {found} "
            f"(see {str(selection_path(indices))!r}), not this one ({fingerprint}); select from "
            "this dataset's scores"
        )


def _check_format(path: Path, version: Any) -> None:
    if version == SCORES_FORMAT and isinstance(version, int):
        return
    if isinstance(version, int) and not isinstance(version, bool) and version > SCORES_FORMAT:
        raise DataPruningError(
            f"scores file {str(path)!r} has format version {version}, newer than this "
            f"datapruning reads ({SCORES_FORMAT}); upgrade datapruning or rescore with it"
        )
    raise DataPruningError(
        f"scores file {str(path)!r} has unknown format version {version!r} (this datapruning "
        f"reads {SCORES_FORMAT}); rescore with `datapruning score`"
    )


def select_positions(
    scores: np.ndarray,
    keep: float,
    strategy: str = "hard",
    seed: int = 0,
    *,
    labels: np.ndarray | None = None,
    num_classes: int | None = None,
    offset: float = 0.0,
    bins: int = CCS_BINS,
) -> np.ndarray:
    """Positions in ``scores`` (an array) of the ``round(keep * N)`` kept examples, sorted.

    The array form of :func:`select`, which takes a :class:`Scores` and returns
    dataset indices; the strategies are described there.

    - ``hard`` keeps the largest scores, ``easy`` the smallest (ties broken by
      position), ``random`` a uniform draw seeded by ``seed``.
    - ``balanced`` keeps the hardest within each class, each class keeping
      ``keep`` of its examples (largest-remainder rounding); needs ``labels``.
    - ``ccs``, coverage-centric selection (Zheng et al. 2023): drop the hardest
      ``offset`` fraction (likely mislabeled), split the rest into ``bins``
      equal-width score bins, and fill the budget from the smallest bin up, each
      bin giving at most an equal share of what is left (a seeded draw inside).
    - ``auto`` is ``hard`` when the kept subset holds at least
      ``AUTO_HARD_MIN_PER_CLASS`` examples per class (data abundant), else
      ``easy`` (Sorscher et al. 2022); classes from ``num_classes`` or ``labels``.
    """
    if strategy not in STRATEGIES:
        raise UnknownNameError("selection strategy", strategy, STRATEGIES)
    if not 0 < keep <= 1:
        raise DataPruningError(f"kept fraction {keep} must lie in (0, 1]")
    if not 0 <= offset < 1:
        raise DataPruningError(f"offset {offset} must lie in [0, 1)")
    if bins < 1:
        raise DataPruningError(f"bins {bins} must be at least 1")
    scores = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(scores)):
        raise DataPruningError("scores contain NaN or inf; rescore the dataset")
    count = max(1, round(keep * len(scores)))
    if strategy == "auto":
        strategy = auto_strategy(count, _num_classes(labels, num_classes, len(scores)))
    if strategy == "random":
        chosen = np.random.default_rng(seed).choice(len(scores), size=count, replace=False)
    elif strategy == "balanced":
        chosen = _balanced(scores, count, _labels(labels, len(scores)))
    elif strategy == "ccs":
        chosen = _coverage(scores, count, offset, bins, seed)
    else:
        order = np.argsort(-scores if strategy == "hard" else scores, kind="stable")
        chosen = order[:count]
    return np.sort(chosen).astype(np.int64)


def auto_strategy(count: int, num_classes: int) -> str:
    """``hard`` when ``count`` kept examples give each class enough, else ``easy``."""
    return "hard" if count >= AUTO_HARD_MIN_PER_CLASS * max(num_classes, 1) else "easy"


def _labels(labels: np.ndarray | None, size: int) -> np.ndarray:
    if labels is None:
        raise DataPruningError("class-balanced selection needs the labels of the scores table")
    labels = np.asarray(labels)
    if labels.shape != (size,):
        raise DataPruningError(f"labels must hold one entry per score ({size}), got {labels.shape}")
    if labels.min() < 0:
        raise DataPruningError("class-balanced selection needs labels; these scores have none")
    return labels


def _num_classes(labels: np.ndarray | None, num_classes: int | None, size: int) -> int:
    if num_classes:
        return int(num_classes)
    return len(np.unique(_labels(labels, size)))


def _balanced(scores: np.ndarray, count: int, labels: np.ndarray) -> np.ndarray:
    classes, sizes = np.unique(labels, return_counts=True)
    exact = sizes * count / len(scores)
    quota = np.floor(exact).astype(np.int64)
    # Largest remainders get the leftover slots, ties to the smaller class label.
    leftover = count - quota.sum()
    quota[np.argsort(-(exact - quota), kind="stable")[:leftover]] += 1
    chosen = []
    for cls, take in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == cls)
        order = np.argsort(-scores[members], kind="stable")
        chosen.append(members[order[:take]])
    return np.concatenate(chosen)


def _coverage(scores: np.ndarray, count: int, offset: float, bins: int, seed: int) -> np.ndarray:
    dropped = int(offset * len(scores))
    if count > len(scores) - dropped:
        raise DataPruningError(
            f"keeping {count} examples after dropping the hardest {dropped} leaves too few; "
            "lower keep or offset"
        )
    order = np.argsort(-scores, kind="stable")
    pool = order[dropped:]
    low, high = scores[pool].min(), scores[pool].max()
    edges = np.linspace(low, high, bins + 1)
    which = np.clip(np.searchsorted(edges, scores[pool], side="right") - 1, 0, bins - 1)
    members = [pool[which == b] for b in range(bins)]
    members = sorted((m for m in members if len(m)), key=len)
    rng = np.random.default_rng(seed)
    chosen, budget = [], count
    for position, bin_members in enumerate(members):
        take = min(len(bin_members), budget // (len(members) - position))
        chosen.append(rng.choice(bin_members, size=take, replace=False))
        budget -= take
    return np.concatenate(chosen)
