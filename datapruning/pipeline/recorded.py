"""Scores from the experiment's full-data runs (``scoring.source: runs``).

The full-data runs (the reference and the KD teacher) train anyway; with
``scoring.source: runs`` they record the training dynamics of the metrics the
students read (``train.record``: el2n passes, forgetting events) and the
experiment's scores file for a metric is those runs' scores averaged over their
seeds. No scoring cell trains a model; each student of a score-based strategy
waits on the full-data runs and is charged only the recording seconds.

EL2N is recorded after 1/6, 1/3, 2/3 and all of the full-data run's epochs
(``RUN_EL2N_SHARES``): on MNIST-1D 20k, 30 epochs, the mean of the passes after
epochs 5, 10, 20 and 30 ranked the examples with Spearman 0.92 against the
4-model, 10-epoch ensemble's EL2N, and its hardest 30% overlapped the
ensemble's with Jaccard 0.69 (``bench/results/dynamics_scores.json``); a
``train.record.el2n_epochs`` of the config's own replaces them. Metrics a run
cannot record (grand needs per-example gradients, proto a self-supervised
encoder; random trains nothing) keep their own scoring cells.

``train.record`` is part of the full-data runs' keys
(:func:`datapruning.pipeline.keys.teacher_key`), so turning ``runs`` on (or
changing which metrics are recorded) retrains them once; the weights are the
same (recording reads detached logits, and its passes run without gradient).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datapruning import __version__
from datapruning._io import file_hash
from datapruning.config import PipelineConfig
from datapruning.errors import DataPruningError
from datapruning.pipeline.data import dataset_of, full_steps
from datapruning.pipeline.keys import SCORES_KEY
from datapruning.pipeline.recipes import full_run_name
from datapruning.pipeline.score_cells import scores_path, scores_record
from datapruning.train.settings import DynamicsConfig

# The full-data run's epochs (as shares of all of them) after which EL2N is recorded.
RUN_EL2N_SHARES = (1 / 6, 1 / 3, 2 / 3, 1.0)
# The name the dynamics recorder gives each metric's file in a run directory.
RUN_SCORES_NAME = "scores-{metric}.parquet"
RUNS_SOURCE = "runs"


def from_runs(cfg: PipelineConfig, metric: str) -> bool:
    """Whether ``metric``'s scores come from the full-data runs (else from a scoring cell)."""
    from datapruning.scoring.registry import RECORDED_METRICS

    return cfg.scoring.source == RUNS_SOURCE and metric in RECORDED_METRICS


def full_epochs(cfg: PipelineConfig) -> int:
    """The epochs of the experiment's full-data run (``train.steps`` rounds up to an epoch)."""
    per_epoch = math.ceil(dataset_of(cfg).num_train / cfg.train.batch_size)
    return math.ceil(full_steps(cfg) / per_epoch)


def el2n_epochs(epochs: int) -> list[int]:
    """The epochs after which a run of ``epochs`` records EL2N (:data:`RUN_EL2N_SHARES`)."""
    return sorted({max(1, round(share * epochs)) for share in RUN_EL2N_SHARES})


def recording(cfg: PipelineConfig, metrics: Iterable[str]) -> DynamicsConfig | None:
    """What the full-data runs record when the experiment's students read ``metrics``.

    The config's own ``train.record`` plus what ``scoring.source: runs`` needs; None
    when that adds nothing (with ``ensemble``: their keys stay what they were).
    """
    own = cfg.train.record
    wanted = {metric for metric in metrics if from_runs(cfg, metric)}
    if not wanted:
        return None
    epochs = own.el2n_epochs or (el2n_epochs(full_epochs(cfg)) if "el2n" in wanted else [])
    return DynamicsConfig(
        forgetting=own.forgetting or "forgetting" in wanted, aum=own.aum, el2n_epochs=epochs
    )


def run_scores_path(cfg: PipelineConfig, seed: int, metric: str) -> Path:
    return cfg.run_root / full_run_name(seed) / RUN_SCORES_NAME.format(metric=metric)


def _key(metric: str, hashes: Sequence[str]) -> str:
    # The recorded files' contents decide: a retrained full-data run rewrites its file.
    # This module's own source too: it computes the mean (and the pipeline's source is
    # left out of the keys, datapruning.pipeline.keys).
    text = json.dumps({"metric": metric, "runs": list(hashes), "code": file_hash(__file__)})
    return f"{RUNS_SOURCE}:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def combine_recorded(cfg: PipelineConfig, metric: str, seeds: Sequence[int]) -> dict[str, Any]:
    """Write (or reuse) the experiment's ``metric`` scores: the mean over the full-data runs
    of ``seeds`` of the scores they recorded, with their provenance; its record."""
    from datapruning.scores import Scores

    paths = [run_scores_path(cfg, seed, metric) for seed in seeds]
    for path in paths:
        if not path.is_file():
            raise DataPruningError(
                f"{str(path)!r} not found: that full-data run did not record {metric}; run the "
                "pipeline again with scoring.source: runs (or --refresh)"
            )
    hashes = [file_hash(path) for path in paths]
    key, target = _key(metric, hashes), scores_path(cfg, metric)
    fingerprint = dataset_of(cfg).fingerprint
    if target.is_file():
        try:
            old = Scores.load(target, fingerprint)
        except DataPruningError:
            old = None
        if old is not None and old.metadata.get(SCORES_KEY) == key:
            return scores_record(target, old.metadata, reused=True)
    runs = [Scores.load(path, fingerprint) for path in paths]
    scores = _mean_scores(metric, seeds, paths, hashes, runs)
    scores.metadata[SCORES_KEY] = key
    target.parent.mkdir(parents=True, exist_ok=True)
    scores.save(target)
    return scores_record(target, scores.metadata, reused=False)


def _mean_scores(
    metric: str,
    seeds: Sequence[int],
    paths: Sequence[Path],
    hashes: Sequence[str],
    runs: Sequence[Any],
) -> Any:
    """One Scores table: each run's score as ``score_seed<s>``, their mean as ``score``."""
    from datapruning.scores import Scores

    first = runs[0]
    index, label = first.table["index"].to_numpy(), first.table["label"].to_numpy()
    for path, run in zip(paths, runs, strict=True):
        if not np.array_equal(run.table["index"].to_numpy(), index):
            raise DataPruningError(f"{str(path)!r} scores other examples than {str(paths[0])!r}")
    columns = {f"score_seed{seed}": run.values for seed, run in zip(seeds, runs, strict=True)}
    table = pd.DataFrame(
        {"index": index, "score": np.mean(list(columns.values()), axis=0), "label": label} | columns
    )
    params = {k: v for k, v in first.metadata.get("params", {}).items() if k != "source"}
    sources = [
        {
            "dir": str(path.parent),
            "seed": seed,
            "file_hash": digest,
            "seconds": float(run.metadata.get("seconds") or 0.0),
        }
        for path, seed, digest, run in zip(paths, seeds, hashes, runs, strict=True)
    ]
    metadata = {
        "metric": metric,
        "source": RUNS_SOURCE,
        "params": {"source": RUNS_SOURCE, **params},
        "dataset": first.metadata.get("dataset"),
        "model": first.metadata.get("model"),
        "seeds": list(seeds),
        # What recording cost, summed over the runs; the part inside their training clocks
        # is already in their train_seconds (the report does not count it twice).
        "seconds": sum(source["seconds"] for source in sources),
        "seconds_in_training": sum(
            float(run.metadata.get("seconds_in_training") or 0.0) for run in runs
        ),
        "runs": sources,
        "version": __version__,
    }
    return Scores(table, metadata)
