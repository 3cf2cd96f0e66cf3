"""The scoring cells of a pipeline: seed groups, shards and the merge, and when scores are reused.

A metric's scoring fans out: the seed groups of seed-group metrics (el2n, grand,
forgetting) each train and save their columns (or, with ``scoring.shards`` > 1,
their models, which the shards then read) in the scores file's parts directory,
and one merge writes the scores file with its cache key
(:func:`datapruning.pipeline.keys.scores_key`). :func:`fan_out` lists those cells
once for every flow that runs them. A scoring killed half-way recomputes only
its missing seed groups.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from datapruning._io import file_hash
from datapruning.config import PipelineConfig
from datapruning.errors import DataPruningError
from datapruning.pipeline.data import dataset_of
from datapruning.pipeline.keys import SCORES_KEY, scores_key


def scores_path(cfg: PipelineConfig, metric: str) -> Path:
    return cfg.run_root / "scores" / f"{metric}.parquet"


def reusable_scores(cfg: PipelineConfig, metric: str) -> dict[str, Any] | None:
    """The scores file's record when it was made with the same key, else None."""
    from datapruning.scores import Scores

    path = scores_path(cfg, metric)
    if not path.is_file():
        return None
    try:
        scores = Scores.load(path, dataset_of(cfg).fingerprint)
    except DataPruningError:
        return None
    if scores.metadata.get(SCORES_KEY) != scores_key(cfg, metric):
        return None
    return scores_record(path, scores.metadata, reused=True)


def scores_record(path: Path, metadata: dict[str, Any], *, reused: bool) -> dict[str, Any]:
    return {
        "metric": metadata["metric"],
        "path": str(path),
        "seconds": float(metadata.get("seconds") or 0.0),
        "hash": file_hash(path),
        "reused": reused,
        # ensemble: scoring cells trained models; runs: the full-data runs recorded it.
        "source": metadata.get("source", "ensemble"),
    }


def seed_groups(cfg: PipelineConfig, metric: str) -> list[list[int]]:
    """The seed groups a scoring fans out (empty: the metric runs as one cell)."""
    from datapruning.scoring.registry import SEED_GROUP_METRICS

    if metric not in SEED_GROUP_METRICS:
        return []
    size = cfg.scoring.ensemble_size if cfg.scoring.batched else 1
    seeds = list(range(cfg.scoring.seeds))
    groups = [seeds[i : i + size] for i in range(0, len(seeds), size)]
    return groups if len(groups) > 1 else []


def shard_count(cfg: PipelineConfig, metric: str) -> int:
    """How many shards a scoring's per-example pass fans out into (1: not sharded).

    ``scoring.shards`` for the metrics that have a per-example pass to split
    (el2n, grand, proto); the others score as one pass whatever it says. (More
    shards than examples fail in each shard cell, in one line.)
    """
    from datapruning.scoring.registry import SHARDABLE_METRICS

    return cfg.scoring.shards if metric in SHARDABLE_METRICS else 1


@dataclass(frozen=True)
class ScoringCell:
    """One cell of a scoring's fan-out: ``kind`` with its arguments after (cfg, metric), and
    the cells (indices into the fan-out's list) it waits for."""

    kind: Literal["prepare", "shard", "group", "merge"]
    args: tuple[Any, ...]
    needs: tuple[int, ...] = ()


def fan_out(cfg: PipelineConfig, metric: str) -> list[ScoringCell]:
    """The cells of one scoring, in an order where each comes after what it needs; the last
    is the merge, whose result is the scores file's record.

    Unsharded: one cell per seed group (:func:`seed_groups`), then the merge scores
    whatever is missing. With ``scoring.shards`` = N > 1 (el2n, grand, proto): the
    seed groups train and save their models (proto: one cell fits the encoder and
    centroids), then N cells each score one block of rows with them, then the
    merge joins the N shard files.
    """
    count = shard_count(cfg, metric)
    cells: list[ScoringCell] = []
    if count > 1:
        groups: list[list[int] | None] = list(seed_groups(cfg, metric)) or [None]
        cells += [ScoringCell("prepare", (seeds,)) for seeds in groups]
        prepared = tuple(range(len(cells)))
        cells += [ScoringCell("shard", (number, count), prepared) for number in range(1, count + 1)]
    else:
        cells += [ScoringCell("group", (seeds,)) for seeds in seed_groups(cfg, metric)]
    scored = tuple(i for i, cell in enumerate(cells) if cell.kind != "prepare")
    return [*cells, ScoringCell("merge", (), scored)]


def _parts_dir(cfg: PipelineConfig, metric: str) -> Path:
    path = scores_path(cfg, metric)
    return path.with_name(path.name + ".parts")


def clear_scores(cfg: PipelineConfig, metric: str) -> None:
    """--refresh: drop the scores file and any saved seed groups."""
    scores_path(cfg, metric).unlink(missing_ok=True)
    shutil.rmtree(_parts_dir(cfg, metric), ignore_errors=True)


def score_group(cfg: PipelineConfig, metric: str, seeds: Sequence[int]) -> list[int]:
    """Compute and save the scores of ``seeds`` (one fan-out cell of a scoring)."""
    _parts_dir(cfg, metric).parent.mkdir(parents=True, exist_ok=True)
    _score(cfg, metric, seeds=seeds)
    return list(seeds)


def _score(
    cfg: PipelineConfig, metric: str, shard: Any = None, seeds: Sequence[int] | None = None
) -> Any:
    """The config's scoring of ``metric`` (or of one shard, or of some seeds only), saving
    what it shares and resumes from in the parts directory."""
    from datapruning.scoring import score

    return score(
        dataset_of(cfg),
        metric,
        cfg.scoring,
        cfg.model,
        cfg.train,
        progress=False,
        work_dir=_parts_dir(cfg, metric),
        shard=shard,
        seeds=seeds,
    )


def prepare_shards(cfg: PipelineConfig, metric: str, seeds: Sequence[int] | None) -> float:
    """Compute what the shards of a scoring share (one fan-out cell): the trained models of
    ``seeds`` (None: every seed group; proto: its encoder and centroids); its seconds."""
    from datapruning.scoring import prepare

    parts = _parts_dir(cfg, metric)
    parts.mkdir(parents=True, exist_ok=True)
    return prepare(
        dataset_of(cfg),
        metric,
        cfg.scoring,
        cfg.model,
        cfg.train,
        progress=False,
        work_dir=parts,
        seeds=seeds,
    )


def score_shard(cfg: PipelineConfig, metric: str, number: int, count: int) -> str:
    """Score shard ``number`` of ``count`` (1-based) and save it in the parts directory."""
    from datapruning.scoring._common import Shard

    shard = Shard(number, count)
    parts = _parts_dir(cfg, metric)
    parts.mkdir(parents=True, exist_ok=True)
    return str(_score(cfg, metric, shard).save(parts / shard.file_name))


def merge_scores(cfg: PipelineConfig, metric: str) -> dict[str, Any]:
    """Score every seed still missing (or join the saved shards, when ``scoring.shards`` > 1),
    write the scores file with its key, and record it."""
    from datapruning.scoring._common import load_shards, merge_shards

    path = scores_path(cfg, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = _parts_dir(cfg, metric)
    shards = shard_count(cfg, metric)
    if shards > 1:
        scores = merge_shards(load_shards(parts, dataset_of(cfg).fingerprint, shards))
    else:
        scores = _score(cfg, metric)
    scores.metadata[SCORES_KEY] = scores_key(cfg, metric)
    scores.save(path)
    shutil.rmtree(parts, ignore_errors=True)
    return scores_record(path, scores.metadata, reused=False)
