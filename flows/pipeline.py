"""The main job as a Prefect flow: teacher -> scores -> students -> report.

1. train the full-data model (the baseline and the KD teacher), one per seed;
2. score the training set with the configured metric (skipped when every
   student draws a random subset);
3. train one student per recipe (kept fraction x strategy x KD x seed);
4. write report.md + tta.png and publish the report as a markdown artifact.

Runs execute one after another on purpose: they are timed, and concurrent runs
on a shared CPU would slow each other and corrupt the time-to-accuracy clock.
The pieces live in the library; this module only orders them.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from datapruning._io import write_npy
from datapruning.config import PipelineConfig, SparsityConfig
from datapruning.data.sources import Dataset, load_dataset
from datapruning.recipes import Recipe, check_pipeline_config, full_run_name, student_recipes
from datapruning.report import FULL_RECIPE, write_report
from datapruning.scores import Scores
from datapruning.scoring import get_metric
from datapruning.train.checkpoint import CHECKPOINT_NAME
from datapruning.train.loop import train


@functools.cache
def _dataset(name: str, params_json: str) -> Dataset:
    # Tasks share one in-memory copy per process instead of regenerating it.
    return load_dataset(name, json.loads(params_json))


def dataset_of(cfg: PipelineConfig) -> Dataset:
    return _dataset(cfg.dataset.name, json.dumps(cfg.dataset.params, sort_keys=True))


@task(name="train-full", cache_policy=NO_CACHE)
def train_full(cfg: PipelineConfig, seed: int) -> dict[str, Any]:
    run_dir = cfg.run_root / full_run_name(seed)
    result = train(
        dataset_of(cfg),
        cfg.model,
        # The full-data reference and teacher is dense: train.sparsity is for the students.
        cfg.train.model_copy(update={"seed": seed, "sparsity": SparsityConfig()}),
        run_dir=run_dir,
        extra_summary={"recipe": FULL_RECIPE, "seed": seed},
        progress=False,
    )
    get_run_logger().info(
        "full data, seed %d: %.1f%% test accuracy in %.1f s",
        seed,
        100 * result.summary["final_test_acc"],
        result.summary["train_seconds"],
    )
    return result.summary | {"run_dir": str(run_dir)}


@task(name="score", cache_policy=NO_CACHE)
def score(cfg: PipelineConfig) -> Path:
    path = cfg.run_root / "scores" / f"{cfg.scoring.metric}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Finished seeds wait in PATH.parts/, so a rerun of an interrupted flow scores
    # only the missing ones.
    parts = path.with_name(path.name + ".parts")
    scores = get_metric(cfg.scoring.metric)(
        dataset_of(cfg), cfg.scoring, cfg.model, cfg.train, progress=False, work_dir=parts
    )
    scores.save(path)
    shutil.rmtree(parts, ignore_errors=True)
    get_run_logger().info(
        "%s scores for %d examples in %.1f s -> %s",
        cfg.scoring.metric,
        len(scores),
        scores.metadata["seconds"],
        path,
    )
    return path


@task(name="train-student", cache_policy=NO_CACHE)
def train_student(
    cfg: PipelineConfig, recipe: Recipe, scores_path: Path | None, teacher: dict[str, Any]
) -> dict[str, Any]:
    dataset = dataset_of(cfg)
    scores = Scores.load(scores_path, dataset.fingerprint) if scores_path else None
    indices = recipe.indices(dataset.num_train, scores)
    run_dir = cfg.run_root / recipe.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    if indices is not None:
        write_npy(run_dir / "indices.npy", indices)
    extra = {"recipe": recipe.label, "strategy": recipe.strategy, "seed": recipe.seed}
    result = train(
        dataset,
        cfg.model,
        cfg.train.model_copy(update={"seed": recipe.seed, "data": recipe.data()}),
        indices=indices,
        teacher=Path(teacher["run_dir"]) / CHECKPOINT_NAME if recipe.kd else None,
        kd=cfg.kd if recipe.kd else None,
        run_dir=run_dir,
        extra_summary=extra,
        progress=False,
        teacher_seconds=teacher["train_seconds"] if recipe.kd else 0.0,
        scoring_seconds=scores.metadata["seconds"] if scores is not None else 0.0,
    )
    get_run_logger().info(
        "%s: %.1f%% test accuracy in %.1f s",
        recipe.run_name,
        100 * result.summary["final_test_acc"],
        result.summary["train_seconds"],
    )
    return result.summary


@task(name="report", cache_policy=NO_CACHE)
def report(cfg: PipelineConfig) -> Path:
    path, text = write_report(cfg.run_root, cfg.report.target_drop, title=cfg.name)
    create_markdown_artifact(
        key=_artifact_key(cfg.name),
        markdown=text,
        description=f"Time-to-accuracy report of {cfg.name} ({path})",
    )
    return path


@flow(name="datapruning-pipeline")
def pipeline(cfg: PipelineConfig) -> Path:
    """Teacher, scores, students and the time-to-accuracy report for ``cfg``."""
    check_pipeline_config(cfg)
    cfg.run_root.mkdir(parents=True, exist_ok=True)
    recipes = student_recipes(cfg)
    teachers = {seed: train_full(cfg, seed) for seed in cfg.students.seeds}
    scores_path = score(cfg) if any(recipe.needs_scores for recipe in recipes) else None
    for recipe in recipes:
        # Each student distils from the full-data model of its own seed.
        train_student(cfg, recipe, scores_path, teachers[recipe.seed])
    return report(cfg)


def _artifact_key(name: str) -> str:
    # Artifact keys may hold only lowercase letters, digits and dashes.
    return "tta-report-" + (re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "run")
