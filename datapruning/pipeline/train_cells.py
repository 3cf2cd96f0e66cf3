"""The training cells of a pipeline or sweep: a teacher, a student, or ``train``'s one run.

Each cell trains its run, or reuses a finished one made with the same key
(:mod:`datapruning.pipeline.keys`), and returns a small record of it that the
flows collect and the report reads. The Prefect tasks call these and nothing
else, so a cell computes the same in any task runner and without Prefect.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

from datapruning._io import file_hash, write_json, write_npy
from datapruning._sections import derive
from datapruning.config import PipelineConfig, TrainConfig
from datapruning.data.dataset import Dataset
from datapruning.errors import DataPruningError
from datapruning.pipeline.accounting import student_charges
from datapruning.pipeline.data import dataset_of
from datapruning.pipeline.keys import (
    RUN_KEY,
    reusable_summary,
    single_key,
    student_key,
    teacher_key,
)
from datapruning.pipeline.recipes import (
    StudentRecipe,
    full_run_name,
    student_train,
    teacher_train,
)
from datapruning.report import FAILURE_NAME, FULL_RECIPE, TEACHER_LOGITS_RECORD
from datapruning.train.settings import DynamicsConfig

TEACHER_LOGITS_NAME = "teacher_logits.npy"


def run_teacher(
    cfg: PipelineConfig,
    seed: int,
    *,
    record: DynamicsConfig | None = None,
    refresh: bool = False,
) -> dict[str, Any]:
    """Train (or reuse) the full-data run of ``seed`` and its logits on the training set.

    ``record``: the dynamics the run records as scores files (None: the config's
    ``train.record``; an experiment's is :attr:`~datapruning.pipeline.grid.Experiment.record`).
    Returns what students need: the run directory, its training seconds, the
    logits file and the seconds they cost, the checkpoint's hash, and whether
    the run was reused.
    """
    from datapruning.train.checkpoint import CHECKPOINT_NAME
    from datapruning.train.kd import logits_sidecar, save_teacher_logits, teacher_logits

    dataset = dataset_of(cfg)
    run_dir = cfg.run_root / full_run_name(seed)
    key = teacher_key(cfg, seed, record)
    summary = None if refresh else reusable_summary(run_dir, key)
    reused = summary is not None
    if summary is None:
        summary = _train(
            cfg,
            _worker_threads(teacher_train(cfg, seed, record)),
            run_dir,
            extra_summary={"recipe": FULL_RECIPE, "seed": seed, RUN_KEY: key, **_where()},
        )
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


def augments(train_cfg: TrainConfig, dataset: Dataset) -> bool:
    """Whether runs of ``train_cfg`` on ``dataset`` augment their batches (train.augment)."""
    from datapruning.train.augment import resolve_recipe

    recipe = resolve_recipe(train_cfg.augment, dataset.default_augment, dataset.input_shape)
    return recipe is not None


def run_student(
    cfg: PipelineConfig,
    recipe: StudentRecipe,
    scores: dict[str, Any] | None,
    teacher: dict[str, Any] | None,
    *,
    refresh: bool = False,
) -> dict[str, Any]:
    """Train (or reuse) one student, charged only for what it used
    (:mod:`datapruning.pipeline.accounting`)."""
    from datapruning.scores import Scores

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
    extra = _student_extra(recipe, key, scores)
    # With augmentation the student runs the teacher online on its augmented batches
    # (datapruning.train.augment): it reads the checkpoint, not the cached logits.
    online = bool(recipe.kd and teacher) and augments(cfg.train, dataset)
    charges = student_charges(recipe, scores, teacher, online=online)
    if charges.teacher_logits_seconds is not None:
        extra["teacher_logits_seconds"] = charges.teacher_logits_seconds
    teacher_source = None
    if recipe.kd and teacher:
        teacher_source = teacher["run_dir"] if online else teacher["logits"]
    summary = _train(
        cfg,
        _worker_threads(student_train(cfg, recipe)),
        run_dir,
        indices=indices,
        teacher=teacher_source,
        kd=cfg.kd if recipe.kd else None,
        extra_summary=extra,
        teacher_seconds=charges.teacher_seconds,
        scoring_seconds=charges.scoring_seconds,
    )
    (run_dir / FAILURE_NAME).unlink(missing_ok=True)
    return _student_record(recipe, summary, reused=False)


def _student_extra(
    recipe: StudentRecipe, key: str, scores: dict[str, Any] | None
) -> dict[str, Any]:
    """What a student's summary records beside the loop's own fields."""
    return {
        "recipe": recipe.label,
        "strategy": recipe.strategy,
        "seed": recipe.seed,
        "sparsity_target": recipe.sparsity,
        "budget": recipe.budget,
        RUN_KEY: key,
        # A shortened full-data run trains on everything for its fraction of the steps: the
        # report and its pruning curve place it at that share of the full-data work.
        **({"kept_fraction": recipe.fraction} if recipe.is_short else {}),
        # Which scores file it read and where those came from: the report divides the
        # scoring among the students that read the same file (datapruning.report.tables).
        **(
            {"scores": {"file": scores["path"], "source": scores.get("source", "ensemble")}}
            if recipe.needs_scores and scores
            else {}
        ),
        **_where(),
    }


def _student_record(
    recipe: StudentRecipe, summary: dict[str, Any], *, reused: bool
) -> dict[str, Any]:
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


def _train(
    cfg: PipelineConfig, train_cfg: TrainConfig, run_dir: Path, **kwargs: Any
) -> dict[str, Any]:
    """One run of the experiment's dataset and model: here, or on ``train_cfg.nproc``
    processes through torchrun (:mod:`datapruning.train.job`); its summary."""
    from datapruning.train.loop import train

    if train_cfg.nproc > 1:
        from datapruning.train.job import train_in_processes

        dataset = (cfg.dataset.name, dict(cfg.dataset.params))
        return train_in_processes(
            dataset, run_dir, model_cfg=cfg.model, train_cfg=train_cfg, progress=False, **kwargs
        )
    run = train(dataset_of(cfg), cfg.model, train_cfg, run_dir=run_dir, progress=False, **kwargs)
    return run.summary


def _where() -> dict[str, Any]:
    """Which machine and process trained a run (a fan-out runs cells elsewhere)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _worker_threads(train_cfg: TrainConfig) -> TrainConfig:
    """``threads: null`` means every core this worker may use (pinned by the runner)."""
    if train_cfg.threads is not None or not hasattr(os, "sched_getaffinity"):
        return train_cfg
    return derive(train_cfg, threads=len(os.sched_getaffinity(0)))


def run_single(
    cfg: PipelineConfig, run_dir: str | os.PathLike[str], *, refresh: bool = False
) -> dict[str, Any]:
    """Train (or reuse) the one run of ``cfg``'s train and kd sections, as ``datapruning train``."""

    run_dir = Path(run_dir)
    key = single_key(cfg)
    summary = None if refresh else reusable_summary(run_dir, key)
    reused = summary is not None
    if summary is None:
        summary = _train(
            cfg,
            _worker_threads(cfg.train),
            run_dir,
            kd=cfg.kd,  # its teacher, if any, is resolved with the run (train.run.resolve_teacher)
            extra_summary={"recipe": "train", RUN_KEY: key, **_where()},
        )
    return {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "status": "reused" if reused else "trained",
        "final_test_acc": float(summary["final_test_acc"]),
        "train_seconds": float(summary["train_seconds"]),
        "end_to_end_seconds": float(summary.get("end_to_end_seconds") or math.nan),
        "error": "",
    }
