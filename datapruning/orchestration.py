"""The cells of a pipeline or sweep: what each one computes from, when it is reused, what it costs.

The Prefect flows (``datapruning.flows``) only order and fan out these calls; the
rules live here so they hold whichever task runner executes a cell (one process,
a process pool, Dask workers on other machines) and without Prefect at all.

Caching. A run is reused when its directory holds a ``summary.json`` whose
``run_key`` matches the key of the run about to start. The key hashes what the
run computes from: the dataset fingerprint, the model, the training settings
(except ``threads`` and ``checkpoint_every``, which change how fast a run goes,
not what it computes), the recipe, for KD the teacher checkpoint's hash and the
KD settings, for a scored subset the scores file's hash, and the library's
source (:func:`source_hash`; the version string is fixed at 0.1.0, so it says
nothing). Scores are reused when their metadata carries the same key. The loop
deletes ``summary.json`` when a run starts, so a run killed half-way is trained
again (continuing from ``resume.pt`` with ``train.checkpoint_every``), and a
scoring killed half-way recomputes only its missing seed groups.

Accounting. A student is charged only what it used: the scoring time only when
it trained on the scores, the teacher's training and its logits only with KD.
The teacher's logits are computed once, by the teacher's own cell, and every
KD student of that teacher is charged the same recorded seconds, so students'
end-to-end times do not depend on the order they ran in (before, the first KD
student computed and cached the logits and paid for them alone).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datapruning._io import file_hash, write_json, write_npy
from datapruning._sections import derive
from datapruning.config import GradualMagnitude, PipelineConfig, SweepDatasetConfig, TrainConfig
from datapruning.data.sources import Dataset, load_dataset
from datapruning.errors import DataPruningError
from datapruning.recipes import Recipe, check_pipeline_config, full_run_name, student_recipes
from datapruning.report import FAILURE_NAME, FULL_RECIPE, TEACHER_LOGITS_RECORD
from datapruning.train.summary import SUMMARY_FORMAT

RUN_KEY = "run_key"
SCORES_KEY = "cache_key"
TEACHER_LOGITS_NAME = "teacher_logits.npy"
# Settings that change how fast a run goes, not what it computes.
_SPEED_ONLY = {"threads", "checkpoint_every"}
# Sharded scores merge equal to unsharded ones (tests/scoring/test_shards.py).
_SCORING_SPEED_ONLY = {"ensemble_threads", "shards"}
# Modules that do not change what a run or a score computes: editing them reuses results.
_NOT_COMPUTING = {"cli.py", "orchestration.py"}


@functools.cache
def source_hash() -> str:
    """A hash of the library source that computes results (datapruning and its models)."""
    import datapruning
    import datapruning.models

    digest = hashlib.sha256()
    for package in (datapruning, datapruning.models):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            # The report (a module, or a package of them) reads results; it computes none.
            if (path.parent == root and path.name in _NOT_COMPUTING) or (
                path.relative_to(root).parts[0] == "report"
            ):
                continue
            digest.update(f"{package.__name__}/{path.relative_to(root).as_posix()}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _key(identity: dict[str, Any]) -> str:
    text = json.dumps(identity | {"source": source_hash()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def _dataset(name: str, params_json: str) -> Dataset:
    # Cells share one in-memory copy per process instead of regenerating it.
    return load_dataset(name, json.loads(params_json))


def dataset_of(cfg: PipelineConfig) -> Dataset:
    return _dataset(cfg.dataset.name, json.dumps(cfg.dataset.params, sort_keys=True))


# ---------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Experiment:
    """One dataset x model of a sweep: its teachers, scores, students and report."""

    cfg: PipelineConfig
    metrics: tuple[str, ...]
    sparsities: tuple[float | None, ...]

    @property
    def root(self) -> Path:
        return self.cfg.run_root

    @property
    def recipes(self) -> list[Recipe]:
        return student_recipes(self.cfg, list(self.metrics), list(self.sparsities))

    @property
    def teacher_seeds(self) -> list[int]:
        # Every seed gets its full-data run: the report's baseline, and the KD teacher.
        return sorted(set(self.cfg.students.seeds))

    @property
    def scored_metrics(self) -> list[str]:
        """The metrics some student trains on (random and RS2 students read none)."""
        used = {recipe.metric for recipe in self.recipes if recipe.needs_scores}
        return [metric for metric in self.metrics if metric in used]


def experiments(cfg: PipelineConfig) -> list[Experiment]:
    """The sweep's experiments: every dataset x model (one, without a sweep section).

    With several, each lives in ``output_dir/name/<dataset>-<model>``.
    """
    check_pipeline_config(cfg)
    sweep = cfg.sweep
    datasets = sweep.datasets or [cfg.dataset]
    models = sweep.models or [cfg.model]
    metrics = tuple(sweep.metrics or [cfg.scoring.metric])
    sparsities: tuple[float | None, ...] = tuple(sweep.sparsity or [None])
    several = len(datasets) * len(models) > 1
    found = []
    for dataset in datasets:
        for model in models:
            update: dict[str, Any] = {"dataset": dataset, "model": model}
            own_metrics = metrics
            if isinstance(dataset, SweepDatasetConfig):
                update |= {"dataset": dataset.plain(), **cfg.sections_for(dataset)}
                own_metrics = tuple(dataset.metrics or metrics)
            if several:
                name = _slug(f"{dataset.name}-{model.name or 'default'}")
                if isinstance(dataset, SweepDatasetConfig) and dataset.label:
                    name = dataset.label + (
                        "" if len(models) == 1 else f"-{_slug(str(model.name))}"
                    )
                update |= {"output_dir": cfg.run_root, "name": name}
            found.append(Experiment(cfg.model_copy(update=update), own_metrics, sparsities))
    roots = [str(exp.root) for exp in found]
    if len(set(roots)) != len(roots):
        raise DataPruningError(
            "two sweep experiments share a run directory (same dataset and model name); "
            "list each dataset x model once"
        )
    return found


def is_sweep(cfg: PipelineConfig) -> bool:
    return any(value is not None for value in cfg.sweep.model_dump().values())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "experiment"


# ---------------------------------------------------------------- reuse


def reusable_summary(run_dir: Path, key: str) -> dict[str, Any] | None:
    """The finished run's summary when it was made with ``key``, else None."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get(RUN_KEY) != key:
        return None
    if summary.get("format_version") != SUMMARY_FORMAT:  # another layout: trained again
        return None
    if not (run_dir / "checkpoint.pt").is_file():
        return None
    return summary


def _train_identity(train_cfg: TrainConfig) -> dict[str, Any]:
    return train_cfg.model_dump(mode="json", exclude=_SPEED_ONLY)


# ---------------------------------------------------------------- teachers


def teacher_key(cfg: PipelineConfig, seed: int) -> str:
    return _key(
        {
            "dataset": dataset_of(cfg).fingerprint,
            "model": cfg.model.model_dump(mode="json"),
            "train": _train_identity(_teacher_train(cfg, seed)),
            "recipe": FULL_RECIPE,
        }
    )


def _teacher_train(cfg: PipelineConfig, seed: int) -> TrainConfig:
    # The full-data reference and teacher is dense: train.sparsity is for the students.
    return derive(cfg.train, seed=seed, sparsity=GradualMagnitude())


def run_teacher(cfg: PipelineConfig, seed: int, *, refresh: bool = False) -> dict[str, Any]:
    """Train (or reuse) the full-data run of ``seed`` and its logits on the training set.

    Returns what students need: the run directory, its training seconds, the
    logits file and the seconds they cost, the checkpoint's hash, and whether
    the run was reused.
    """
    from datapruning.train.checkpoint import CHECKPOINT_NAME
    from datapruning.train.kd import logits_sidecar, save_teacher_logits, teacher_logits
    from datapruning.train.loop import train

    dataset = dataset_of(cfg)
    run_dir = cfg.run_root / full_run_name(seed)
    key = teacher_key(cfg, seed)
    summary = None if refresh else reusable_summary(run_dir, key)
    reused = summary is not None
    if summary is None:
        result = train(
            dataset,
            cfg.model,
            _worker_threads(_teacher_train(cfg, seed)),
            run_dir=run_dir,
            extra_summary={"recipe": FULL_RECIPE, "seed": seed, RUN_KEY: key, **_where()},
            progress=False,
        )
        summary = result.summary
    checkpoint = run_dir / CHECKPOINT_NAME
    checkpoint_hash = file_hash(checkpoint)
    record_path = run_dir / TEACHER_LOGITS_RECORD
    logits_path = run_dir / TEACHER_LOGITS_NAME
    record = _read_json(record_path)
    if (
        record is None
        or record.get("checkpoint") != checkpoint_hash
        or not logits_path.is_file()
        or not logits_sidecar(logits_path).is_file()  # written before logits carried one
    ):
        start = time.perf_counter()
        logits = teacher_logits(checkpoint, dataset, cache=False)
        seconds = time.perf_counter() - start
        save_teacher_logits(logits_path, logits.logits, dataset)
        record = {"checkpoint": checkpoint_hash, "seconds": seconds}
        write_json(record_path, record)
    return {
        "run": full_run_name(seed),
        "status": "reused" if reused else "trained",
        "seed": seed,
        "run_dir": str(run_dir),
        "train_seconds": float(summary["train_seconds"]),
        "final_test_acc": float(summary["final_test_acc"]),
        "logits": str(logits_path),
        "logits_seconds": float(record["seconds"]),
        "checkpoint_hash": checkpoint_hash,
        "reused": reused,
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------- scores


def scores_path(cfg: PipelineConfig, metric: str) -> Path:
    return cfg.run_root / "scores" / f"{metric}.parquet"


def scores_key(cfg: PipelineConfig, metric: str) -> str:
    scoring = cfg.scoring.model_dump(
        mode="json", exclude=_SCORING_SPEED_ONLY | {"metric", "params", "model"}
    )
    # Only this metric's own settings: another metric's params never invalidate its scores.
    scoring["params"] = cfg.scoring.params_for(metric).model_dump(mode="json")
    return _key(
        {
            "metric": metric,
            "scoring": scoring,
            "dataset": dataset_of(cfg).fingerprint,
            # The model that scores: scoring.model (a proxy) when set, else the student's.
            "model": (cfg.scoring.model or cfg.model).model_dump(mode="json"),
            "train": _train_identity(cfg.train),
        }
    )


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
    return _scores_record(path, scores.metadata, reused=True)


def _scores_record(path: Path, metadata: dict[str, Any], *, reused: bool) -> dict[str, Any]:
    return {
        "metric": metadata["metric"],
        "path": str(path),
        "seconds": float(metadata.get("seconds") or 0.0),
        "hash": file_hash(path),
        "reused": reused,
    }


def seed_groups(cfg: PipelineConfig, metric: str) -> list[list[int]]:
    """The seed groups a scoring fans out (empty: the metric runs as one cell)."""
    from datapruning.scoring import SEED_GROUP_METRICS

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
    from datapruning.scoring import SHARDABLE_METRICS

    return cfg.scoring.shards if metric in SHARDABLE_METRICS else 1


def _parts_dir(cfg: PipelineConfig, metric: str) -> Path:
    path = scores_path(cfg, metric)
    return path.with_name(path.name + ".parts")


def clear_scores(cfg: PipelineConfig, metric: str) -> None:
    """--refresh: drop the scores file and any saved seed groups."""
    scores_path(cfg, metric).unlink(missing_ok=True)
    shutil.rmtree(_parts_dir(cfg, metric), ignore_errors=True)


def score_group(cfg: PipelineConfig, metric: str, seeds: Sequence[int]) -> list[int]:
    """Compute and save the scores of ``seeds`` (one fan-out cell of a scoring)."""
    from datapruning.scoring._common import only_seeds

    _parts_dir(cfg, metric).parent.mkdir(parents=True, exist_ok=True)
    with only_seeds(seeds):
        _score(cfg, metric)
    return list(seeds)


def _score(cfg: PipelineConfig, metric: str, shard: Any = None) -> Any:
    """The config's scoring of ``metric`` (or of one shard), saving what it shares and
    resumes from in the parts directory."""
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
    )


def prepare_shards(cfg: PipelineConfig, metric: str, seeds: Sequence[int] | None) -> float:
    """Compute what the shards of a scoring share (one fan-out cell): the trained models of
    ``seeds`` (None: every seed group; proto: its encoder and centroids); its seconds."""
    from datapruning.scoring import prepare
    from datapruning.scoring._common import only_seeds

    parts = _parts_dir(cfg, metric)
    parts.mkdir(parents=True, exist_ok=True)
    args = (dataset_of(cfg), metric, cfg.scoring, cfg.model, cfg.train)
    if seeds is None:
        return prepare(*args, progress=False, work_dir=parts)
    with only_seeds(seeds):
        return prepare(*args, progress=False, work_dir=parts)


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
    return _scores_record(path, scores.metadata, reused=False)


# ---------------------------------------------------------------- students


def augments(train_cfg: TrainConfig, dataset: Dataset) -> bool:
    """Whether runs of ``train_cfg`` on ``dataset`` augment their batches (train.augment)."""
    from datapruning.train.augment import resolve_recipe

    recipe = resolve_recipe(train_cfg.augment, dataset.default_augment, dataset.input_shape)
    return recipe is not None


def full_steps(cfg: PipelineConfig) -> int:
    """The optimizer steps of the experiment's full-data run (train.steps, else its epochs)."""
    if cfg.train.steps is not None:
        return cfg.train.steps
    return cfg.train.epochs * math.ceil(dataset_of(cfg).num_train / cfg.train.batch_size)


def student_train(cfg: PipelineConfig, recipe: Recipe) -> TrainConfig:
    update: dict[str, Any] = {"seed": recipe.seed, "data": recipe.data()}
    if recipe.is_short or recipe.budget == "steps":
        update["steps"] = recipe.steps(full_steps(cfg))
    if recipe.sparsity is not None:  # a sweep's target: gradual magnitude (checked at load)
        sparsity = derive(cfg.train.sparsity, target=recipe.sparsity)
        update["sparsity"] = sparsity if sparsity.enabled else GradualMagnitude()
    return derive(cfg.train, **update)


def student_key(
    cfg: PipelineConfig,
    recipe: Recipe,
    scores: dict[str, Any] | None,
    teacher: dict[str, Any] | None,
) -> str:
    return _key(
        {
            "dataset": dataset_of(cfg).fingerprint,
            "model": cfg.model.model_dump(mode="json"),
            "train": _train_identity(student_train(cfg, recipe)),
            "recipe": [recipe.label, recipe.fraction, recipe.strategy, recipe.seed]
            + ([recipe.budget] if recipe.budget != "epochs" else []),
            "scores": scores["hash"] if recipe.needs_scores and scores else None,
            "kd": [cfg.kd.model_dump(mode="json"), teacher["checkpoint_hash"]]
            if recipe.kd and teacher
            else None,
        }
    )


def run_student(
    cfg: PipelineConfig,
    recipe: Recipe,
    scores: dict[str, Any] | None,
    teacher: dict[str, Any] | None,
    *,
    refresh: bool = False,
) -> dict[str, Any]:
    """Train (or reuse) one student, charged only for what it used (see the module doc)."""
    from datapruning.scores import Scores
    from datapruning.train.loop import train

    if recipe.needs_scores and scores is None:
        raise DataPruningError(f"recipe {recipe.run_name} trains on scores but none were given")
    if recipe.kd and teacher is None:
        raise DataPruningError(f"recipe {recipe.run_name} distils but no teacher was given")
    dataset = dataset_of(cfg)
    run_dir = cfg.run_root / recipe.run_name
    key = student_key(cfg, recipe, scores, teacher)
    summary = None if refresh else reusable_summary(run_dir, key)
    if summary is not None:
        (run_dir / FAILURE_NAME).unlink(missing_ok=True)
        return _student_record(recipe, summary, reused=True)
    table = Scores.load(scores["path"], dataset.fingerprint) if recipe.needs_scores else None
    indices = recipe.indices(dataset.num_train, table)
    run_dir.mkdir(parents=True, exist_ok=True)
    if indices is not None:
        write_npy(run_dir / "indices.npy", indices)
    extra: dict[str, Any] = {
        "recipe": recipe.label,
        "strategy": recipe.strategy,
        "seed": recipe.seed,
        "sparsity_target": recipe.sparsity,
        "budget": recipe.budget,
        RUN_KEY: key,
        # A shortened full-data run trains on everything for its fraction of the steps: the
        # report and its pruning curve place it at that share of the full-data work.
        **({"kept_fraction": recipe.fraction} if recipe.is_short else {}),
        **_where(),
    }
    # With augmentation the student runs the teacher online on its augmented batches
    # (datapruning.train.augment): it reads the checkpoint, not the cached logits.
    online = bool(recipe.kd and teacher) and augments(cfg.train, dataset)
    if recipe.kd and teacher is not None and not online:
        # The logits file was written by the teacher's cell; every KD student of that
        # teacher is charged its recorded cost (the loop would charge 0 for a .npy).
        extra["teacher_logits_seconds"] = teacher["logits_seconds"]
    teacher_source = None
    if recipe.kd and teacher:
        teacher_source = teacher["run_dir"] if online else teacher["logits"]
    result = train(
        dataset,
        cfg.model,
        _worker_threads(student_train(cfg, recipe)),
        indices=indices,
        teacher=teacher_source,
        kd=cfg.kd if recipe.kd else None,
        run_dir=run_dir,
        extra_summary=extra,
        progress=False,
        teacher_seconds=teacher["train_seconds"] if recipe.kd and teacher else 0.0,
        scoring_seconds=scores["seconds"] if recipe.needs_scores and scores else 0.0,
    )
    (run_dir / FAILURE_NAME).unlink(missing_ok=True)
    return _student_record(recipe, result.summary, reused=False)


def _student_record(recipe: Recipe, summary: dict[str, Any], *, reused: bool) -> dict[str, Any]:
    return {
        "run": recipe.run_name,
        "recipe": recipe.label,
        "kept": recipe.fraction,
        "kd": recipe.kd,
        "seed": recipe.seed,
        "status": "reused" if reused else "trained",
        "final_test_acc": float(summary["final_test_acc"]),
        "train_seconds": float(summary["train_seconds"]),
        "end_to_end_seconds": float(summary.get("end_to_end_seconds") or math.nan),
        "error": "",
    }


def _where() -> dict[str, Any]:
    """Which machine and process trained a run (a fan-out runs cells elsewhere)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _worker_threads(train_cfg: TrainConfig) -> TrainConfig:
    """``threads: null`` means every core this worker may use (pinned by the runner)."""
    if train_cfg.threads is not None or not hasattr(os, "sched_getaffinity"):
        return train_cfg
    return train_cfg.model_copy(update={"threads": len(os.sched_getaffinity(0))})


# ---------------------------------------------------------------- one run


def run_single(
    cfg: PipelineConfig, run_dir: str | os.PathLike[str], *, refresh: bool = False
) -> dict[str, Any]:
    """Train (or reuse) the one run of ``cfg``'s train and kd sections, as ``datapruning train``."""
    from datapruning.train.loop import train

    run_dir = Path(run_dir)
    dataset = dataset_of(cfg)
    teacher = cfg.kd.teacher or cfg.kd.teacher_logits
    data = cfg.train.data
    inputs = {
        name: _input_hash(path)
        for name, path in {
            "teacher": teacher,
            "indices": data.indices,
            "scores": data.scores,
        }.items()
        if path is not None
    }
    key = _key(
        {
            "dataset": dataset.fingerprint,
            "model": cfg.model.model_dump(mode="json"),
            "train": _train_identity(cfg.train),
            "kd": cfg.kd.model_dump(mode="json") if teacher else None,
            "inputs": inputs,
        }
    )
    summary = None if refresh else reusable_summary(run_dir, key)
    reused = summary is not None
    if summary is None:
        summary = train(
            dataset,
            cfg.model,
            _worker_threads(cfg.train),
            teacher=teacher,
            kd=cfg.kd if teacher else None,
            run_dir=run_dir,
            extra_summary={"recipe": "train", RUN_KEY: key, **_where()},
            progress=False,
        ).summary
    return {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "status": "reused" if reused else "trained",
        "final_test_acc": float(summary["final_test_acc"]),
        "train_seconds": float(summary["train_seconds"]),
        "end_to_end_seconds": float(summary.get("end_to_end_seconds") or math.nan),
        "error": "",
    }


def _input_hash(path: Path) -> str:
    """A file's hash (a run directory: its checkpoint's); a missing one fails in the loop."""
    from datapruning.train.checkpoint import CHECKPOINT_NAME

    path = path / CHECKPOINT_NAME if path.is_dir() else path
    return file_hash(path) if path.is_file() else f"missing:{path}"


# ---------------------------------------------------------------- failures


def is_transient(exc: BaseException) -> bool:
    """Errors worth a retry: I/O and connection trouble, a lost worker; not bad input."""
    if isinstance(exc, DataPruningError):
        return False
    if isinstance(exc, OSError | TimeoutError | ConnectionError | MemoryError):
        return True
    # distributed.KilledWorker, CommClosedError: named, not imported (Dask is optional).
    return type(exc).__name__ in {"KilledWorker", "CommClosedError", "StreamClosedError"}


def describe_error(exc: BaseException | None) -> str:
    if exc is None:
        return "failed"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def record_failure(run_dir: Path, recipe: Recipe, error: str) -> dict[str, Any]:
    """Mark a cell that failed for good; the report lists it with its error."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"run": recipe.run_name, "recipe": recipe.label, "error": error}
    write_json(run_dir / FAILURE_NAME, record)
    # A summary left by an earlier run of this cell is not this run's result.
    (run_dir / "summary.json").unlink(missing_ok=True)
    return {
        "run": recipe.run_name,
        "recipe": recipe.label,
        "kept": recipe.fraction,
        "kd": recipe.kd,
        "seed": recipe.seed,
        "status": "failed",
        "final_test_acc": math.nan,
        "train_seconds": math.nan,
        "end_to_end_seconds": math.nan,
        "error": error,
    }


def tally(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many runs (teachers and students) were trained, reused and failed."""
    counts = {"trained": 0, "reused": 0, "failed": 0}
    for record in records:
        counts[record["status"]] += 1
    return counts


def describe_tally(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{total} runs: {counts['trained']} trained, {counts['reused']} reused" + (
        f", {counts['failed']} failed" if counts["failed"] else ""
    )
