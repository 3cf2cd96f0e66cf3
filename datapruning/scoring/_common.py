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

A :class:`Shard` (``--shard i/n``, 1-based) is a contiguous block of rows; a
shard's scores carry its rows and the cost of what the shards share, and
:func:`merge_shards` joins every shard into the table and provenance that one
unsharded pass writes (``seconds`` aside), refusing shards of other settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from datapruning import __version__
from datapruning._interrupt import immediate_stop
from datapruning._io import atomic_write
from datapruning._progress import Progress
from datapruning.data.dataset import Dataset, dataset_record
from datapruning.data.stream import ExampleSource, check_finite
from datapruning.errors import DataPruningError, Interrupted
from datapruning.scores import Scores

if TYPE_CHECKING:
    from datapruning.config import ScoringConfig, TrainConfig
    from datapruning.user import ModelSpec


@dataclass(frozen=True)
class Shard:
    """Shard ``number`` of ``count`` (1-based, as ``--shard 2/4``): a contiguous block of rows.

    Shard ``i`` of ``n`` covers rows ``(i-1)*N//n`` to ``i*N//n`` of the N training
    examples: blocks (not a stride), so a shard reads its examples in one run of
    the file and the merge is a concatenation; sizes differ by at most one.
    """

    number: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.number <= self.count:
            raise DataPruningError(
                f"--shard {self.number}/{self.count}: give i/n with 1 <= i <= n (shards count from 1)"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` (1-based), e.g. ``"2/4"``; anything else is a one-line error."""
        number, slash, count = str(text).strip().partition("/")
        if not slash or not number.strip().isdigit() or not count.strip().isdigit():
            raise DataPruningError(
                f"--shard {text!r}: give i/n, e.g. 1/4 (shard i of n, counting from 1)"
            )
        return cls(int(number), int(count))

    def rows(self, num_rows: int) -> range:
        if self.count > num_rows:
            raise DataPruningError(
                f"shard {self}: {self.count} shards for {num_rows} examples; use at most "
                f"{num_rows} shards"
            )
        return range(
            (self.number - 1) * num_rows // self.count, self.number * num_rows // self.count
        )

    def __str__(self) -> str:
        return f"{self.number}/{self.count}"

    @property
    def file_name(self) -> str:
        return f"shard-{self.number}-of-{self.count}.parquet"


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
    # Score only this shard's rows (a metric registered with a ``prepare`` step);
    # what the shards share (trained models, centroids) is kept in ``work_dir``.
    shard: Shard | None = None
    # Compute and save only these seeds (None: every seed): a fan-out runs each seed group
    # on its own worker, all with the same ``work_dir``; one unrestricted job afterwards
    # finds every seed saved and merges them. A restricted job's scores are partial.
    seeds: frozenset[int] | None = None

    def rows(self) -> range:
        """The rows this job scores: the shard's, or every training example."""
        num_rows = self.dataset.num_train
        return self.shard.rows(num_rows) if self.shard is not None else range(num_rows)


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


def build_scores(
    dataset: Dataset,
    metric: str,
    per_seed: Mapping[int, np.ndarray],
    *,
    params: Mapping[str, Any],
    model: Mapping[str, Any] | None,
    seconds: float,
    reused_seeds: Sequence[int] = (),
    shard: Shard | None = None,
    prepare_seconds: float = 0.0,
) -> Scores:
    """The Scores table (mean over seeds, per-seed columns) with its provenance.

    With ``shard`` the columns hold that shard's rows only and the metadata says
    which; ``prepare_seconds`` is the cost of what the shards share (trained
    models, centroids), counted once when the shards merge (:func:`merge_shards`).
    """
    seeds = sorted(per_seed)
    columns = {f"score_seed{seed}": np.asarray(per_seed[seed], dtype=np.float64) for seed in seeds}
    num_train = dataset.num_train
    rows = shard.rows(num_train) if shard is not None else range(num_train)
    # The label column is bookkeeping for class-balanced selection; label-free
    # metrics (proto) never look at it while scoring.
    table = pd.DataFrame(
        {
            "index": np.arange(rows.start, rows.stop, dtype=np.int64),
            "score": np.mean(np.stack(list(columns.values())), axis=0),
            "label": np.asarray(dataset.y_train, dtype=np.int64)[rows.start : rows.stop],
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
    if shard is not None:
        metadata["shard"] = {
            "number": shard.number,
            "count": shard.count,
            "rows": [rows.start, rows.stop],
            "prepare_seconds": prepare_seconds,
        }
    return Scores(table, metadata)


# Per-shard counts in a metric's params that add up to the whole set's (proto's
# examples per cluster); every other parameter must be the same in every shard.
ADDITIVE_PARAMS = ("cluster_sizes",)
# Metadata that differs between shards of one scoring by nature.
_PER_SHARD = ("shard", "seconds", "reused_seeds")


def shard_files(directory: str | os.PathLike[str]) -> dict[tuple[int, int], Path]:
    """The shard files in ``directory``: (number, count) -> path."""
    found = {}
    for path in sorted(Path(directory).glob("shard-*-of-*.parquet")):
        number, _, count = path.name[len("shard-") : -len(".parquet")].partition("-of-")
        if number.isdigit() and count.isdigit():
            found[int(number), int(count)] = path
    return found


def load_shards(
    directory: str | os.PathLike[str], fingerprint: str, count: int | None = None
) -> list[Scores]:
    """Every shard of one sharded scoring saved in ``directory``, in order.

    ``count``: the shards of that many (others are ignored); None: the one count
    found. A missing shard, or shards of two different counts, is a one-line
    error naming the file to make (or remove).
    """
    directory = Path(directory)
    found = shard_files(directory)
    if count is not None:
        found = {key: path for key, path in found.items() if key[1] == count}
    if not found:
        raise DataPruningError(
            f"no shard files (shard-I-of-N.parquet) in {str(directory)!r}; "
            "run `datapruning score --shard i/n` for every i first"
        )
    counts = sorted({count for _, count in found})
    if len(counts) > 1:
        raise DataPruningError(
            f"{str(directory)!r} holds shards of {' and '.join(map(str, counts))} shard runs; "
            "remove the files of the count you do not want"
        )
    count = counts[0]
    for number in range(1, count + 1):
        if (number, count) not in found:
            missing = directory / Shard(number, count).file_name
            raise DataPruningError(
                f"shard {number}/{count} is missing ({str(missing)!r}); run "
                f"`datapruning score --shard {number}/{count}` with the same settings"
            )
    return [Scores.load(found[number, count], fingerprint) for number in range(1, count + 1)]


def merge_shards(shards: Sequence[Scores]) -> Scores:
    """One scores file from every shard of a scoring, equal in content to scoring unsharded.

    The rows are concatenated; the metadata is the shards' (which must agree),
    with the per-shard counts of :data:`ADDITIVE_PARAMS` summed, ``seconds`` the
    shared preparation once plus every shard's own pass, and ``shards`` the count.
    """
    first = shards[0].metadata
    if "shard" not in first:
        raise DataPruningError("merge_shards() takes shard scores (written with --shard i/n)")
    count = first["shard"]["count"]

    def comparable(metadata: dict[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in metadata.get("params", {}).items() if k not in ADDITIVE_PARAMS}
        rest = {k: v for k, v in metadata.items() if k not in _PER_SHARD}
        return rest | {"params": params}

    expected = comparable(first)
    numbers = [scores.metadata.get("shard", {}).get("number") for scores in shards]
    if numbers != list(range(1, count + 1)) or len(shards) != count:
        raise DataPruningError(f"merge_shards() needs shards 1..{count} in order, got {numbers}")
    for scores in shards[1:]:
        other = comparable(scores.metadata)
        if other != expected:
            differ = sorted(
                key for key in expected.keys() | other.keys() if expected.get(key) != other.get(key)
            )
            raise DataPruningError(
                f"shard {scores.metadata['shard']['number']}/{count} was scored with other "
                f"settings than shard 1/{count} ({', '.join(differ)} differ); rescore it"
            )
    table = pd.concat([scores.table for scores in shards], ignore_index=True)
    num_train = first["dataset"]["num_train"]
    if not np.array_equal(table["index"].to_numpy(), np.arange(num_train)):
        raise DataPruningError(
            f"the {count} shards do not cover rows 0..{num_train - 1} once each; rescore them"
        )
    params = dict(first["params"])
    for key in ADDITIVE_PARAMS:
        if key in params:
            params[key] = np.sum(
                [scores.metadata["params"][key] for scores in shards], axis=0
            ).tolist()
    prepare = max(float(scores.metadata["shard"]["prepare_seconds"]) for scores in shards)
    reused = sorted({seed for scores in shards for seed in scores.metadata.get("reused_seeds", [])})
    metadata = {k: v for k, v in first.items() if k not in _PER_SHARD} | {
        "params": params,
        "seconds": prepare + sum(float(scores.metadata["seconds"]) for scores in shards),
        "reused_seeds": reused,
        "shards": count,
    }
    return Scores(table, metadata)


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
        done = self.load(seeds, num_rows)
        self.reused = sorted(done)
        missing = [seed for seed in seeds if seed not in done]
        chunks = [missing[i : i + group] for i in range(0, len(missing), group)]
        # A bar on a terminal, else a line as seeds finish (datapruning._progress).
        bar = Progress(desc, len(missing), "models", progress)
        try:
            with immediate_stop():
                for chunk in chunks:
                    start = time.perf_counter()
                    values = compute(chunk)
                    seconds = (time.perf_counter() - start) / len(chunk)
                    for row, seed in zip(values, chunk, strict=True):
                        self.save(seed, row, seconds)
                        done[seed] = (row, seconds)
                    bar.update(len(chunk), f"seed {chunk[-1]} done")
        except Interrupted as exc:
            where = f" in {str(self.root)!r}" if self.root is not None else " (no work dir)"
            # Counted on disk: the signal may land between a seed's save and its entry in done.
            saved = len(self.load(seeds, num_rows)) if self.root is not None else 0
            raise Interrupted(exc.signum, f"{saved} of {len(seeds)} seeds saved{where}") from None
        finally:
            bar.close()
        return done
