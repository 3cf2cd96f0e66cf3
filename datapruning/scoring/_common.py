"""What every metric shares: input checks, provenance, and per-seed results on disk.

A metric computes one score column per seed; :class:`SeedStore` keeps each
finished column in a work directory keyed by everything that determines it, so
an interrupted run recomputes only the missing seeds. Each column is written
atomically, so a SIGKILL at any moment leaves whole columns (and a group half
trained, which is computed again from its seed: the same scores bit for bit,
tests/test_crash_resume.py); SIGINT/SIGTERM stop at once with
:class:`~datapruning.errors.Interrupted` saying how many seeds are saved.
:func:`build_scores` assembles the table and its provenance record (with the
seeds taken from the work directory as ``reused_seeds``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from datapruning import __version__
from datapruning._interrupt import immediate_stop
from datapruning._io import atomic_write
from datapruning.data.sources import Dataset
from datapruning.data.stream import ExampleSource, check_finite
from datapruning.errors import DataPruningError, Interrupted
from datapruning.scores import Scores

if TYPE_CHECKING:
    from datapruning.config import ScoringConfig, TrainConfig
    from datapruning.user import ModelSpec


@dataclass(frozen=True)
class MetricJob:
    """Everything a metric reads: the one argument of every registered metric function.

    ``params`` is the metric's own params model (``scoring.params.<metric>``);
    ``scoring`` the driver's shared settings; ``train`` the scoring models'
    optimiser recipe. ``work_dir`` keeps finished seeds for resuming.
    """

    dataset: Dataset
    scoring: ScoringConfig
    params: Any
    model: ModelSpec  # a ModelConfig of the registry, or the user's module / factory
    train: TrainConfig
    progress: bool | None = None
    work_dir: str | os.PathLike[str] | None = None


def check_features(x: np.ndarray | ExampleSource, what: str = "features") -> None:
    """Refuse NaN or inf inputs: every metric would turn them into garbage scores."""
    check_finite(x, what)


def check_labels(dataset: Dataset) -> None:
    """Refuse labels outside 0..num_classes-1 (one-hot targets would be wrong)."""
    y = np.asarray(dataset.y_train)
    if y.ndim != 1 or len(y) != len(dataset.x_train):
        raise DataPruningError(
            f"dataset {dataset.name!r}: y_train must hold one label per training example"
        )
    if len(y) and (y.min() < 0 or y.max() >= dataset.num_classes):
        raise DataPruningError(
            f"dataset {dataset.name!r}: train labels must lie in 0..{dataset.num_classes - 1}, "
            f"found {int(y.min())}..{int(y.max())}"
        )


def dataset_record(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "params": dict(dataset.params),
        "fingerprint": dataset.fingerprint,
        "num_train": len(dataset.x_train),
        "num_classes": dataset.num_classes,
    }


def build_scores(
    dataset: Dataset,
    metric: str,
    per_seed: Mapping[int, np.ndarray],
    *,
    params: Mapping[str, Any],
    model: Mapping[str, Any] | None,
    seconds: float,
    reused_seeds: Sequence[int] = (),
) -> Scores:
    """The Scores table (mean over seeds, per-seed columns) with its provenance."""
    seeds = sorted(per_seed)
    columns = {f"score_seed{seed}": np.asarray(per_seed[seed], dtype=np.float64) for seed in seeds}
    # The label column is bookkeeping for class-balanced selection; label-free
    # metrics (proto) never look at it while scoring.
    table = pd.DataFrame(
        {
            "index": np.arange(len(dataset.x_train), dtype=np.int64),
            "score": np.mean(np.stack(list(columns.values())), axis=0),
            "label": np.asarray(dataset.y_train, dtype=np.int64),
            **columns,
        }
    )
    metadata = {
        "metric": metric,
        "params": dict(params),
        "dataset": dataset_record(dataset),
        "model": dict(model) if model is not None else None,
        "seeds": seeds,
        "seconds": seconds,
        "reused_seeds": sorted(reused_seeds),  # taken from an interrupted run's work dir
        "version": __version__,
    }
    return Scores(table, metadata)


# Set by only_seeds(): the seeds this process computes; the others are left to other workers.
_ONLY_SEEDS: ContextVar[frozenset[int] | None] = ContextVar("only_seeds", default=None)


@contextmanager
def only_seeds(seeds: Sequence[int]) -> Iterator[None]:
    """Within the block, seed-group metrics compute and save only ``seeds``.

    A scoring fan-out runs each seed group on its own worker under this, all
    with the same ``work_dir``; one unrestricted call afterwards finds every
    seed saved and merges them into the scores file. The restricted call returns
    the scores of the seeds it has (finished or computed), so its result is partial.
    """
    token = _ONLY_SEEDS.set(frozenset(seeds))
    try:
        yield
    finally:
        _ONLY_SEEDS.reset(token)


# The layout of a part (seedN.npz: values, seconds); part of the store's key.
PARTS_FORMAT = 1


class SeedStore:
    """Per-seed score columns saved as they finish, under ``work_dir/<key>/``.

    The key hashes the metric, its parameters, the dataset fingerprint and the
    model, so results of a different job are never mistaken for this one's.
    Without a ``work_dir`` nothing is kept.
    """

    def __init__(self, work_dir: str | os.PathLike[str] | None, identity: Mapping[str, Any]):
        # The parts' layout is part of the key: parts of another layout are never read.
        identity = {**identity, "parts_format": PARTS_FORMAT}
        blob = json.dumps(identity, sort_keys=True, default=str).encode()
        self.key = hashlib.blake2b(blob, digest_size=8).hexdigest()
        self.root = Path(work_dir) if work_dir is not None else None
        self.dir = self.root / self.key if self.root is not None else None
        self.reused: list[int] = []  # the seeds the last run() loaded instead of computing

    def load(self, seeds: Sequence[int], num_rows: int) -> dict[int, tuple[np.ndarray, float]]:
        """The finished seeds among ``seeds``: column and the seconds it cost."""
        done: dict[int, tuple[np.ndarray, float]] = {}
        if self.dir is None or not self.dir.is_dir():
            return done
        for seed in seeds:
            path = self.dir / f"seed{seed}.npz"
            if not path.is_file():
                continue
            try:
                with np.load(path, allow_pickle=False) as part:
                    values, seconds = part["values"], float(part["seconds"])
            except (OSError, ValueError, KeyError):
                continue  # a damaged part is recomputed
            if values.shape == (num_rows,) and np.all(np.isfinite(values)):
                done[seed] = (values, seconds)
        return done

    def save(self, seed: int, values: np.ndarray, seconds: float) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.savez(handle, values=np.asarray(values, dtype=np.float64), seconds=seconds)

        atomic_write(self.dir / f"seed{seed}.npz", write)

    def run(
        self,
        seeds: Sequence[int],
        num_rows: int,
        group: int,
        compute: Callable[[list[int]], np.ndarray],
        desc: str,
        progress: bool | None,
    ) -> dict[int, tuple[np.ndarray, float]]:
        """Every seed's column and cost: finished ones loaded, the rest computed and saved.

        ``compute(chunk)`` returns one row per seed of ``chunk`` (up to ``group``
        seeds at a time); each chunk is saved as soon as it finishes.
        """
        only = _ONLY_SEEDS.get()
        if only is not None:
            seeds = [seed for seed in seeds if seed in only]
        done = self.load(seeds, num_rows)
        self.reused = sorted(done)
        missing = [seed for seed in seeds if seed not in done]
        chunks = [missing[i : i + group] for i in range(0, len(missing), group)]
        bar = tqdm(
            chunks,
            desc=desc,
            unit="group" if group > 1 else "model",
            disable=None if progress is None else not progress,
        )
        try:
            with immediate_stop():
                for chunk in bar:
                    start = time.perf_counter()
                    values = compute(chunk)
                    seconds = (time.perf_counter() - start) / len(chunk)
                    for row, seed in zip(values, chunk, strict=True):
                        self.save(seed, row, seconds)
                        done[seed] = (row, seconds)
        except Interrupted as exc:
            where = f" in {str(self.root)!r}" if self.root is not None else " (no work dir)"
            saved = len(done) if self.root is not None else 0
            raise Interrupted(exc.signum, f"{saved} of {len(seeds)} seeds saved{where}") from None
        return done
