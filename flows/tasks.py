"""The Prefect tasks: one call each into datapruning.pipeline, with retries.

Every task is a cell that may run on another machine; what it computes, when
it is reused and what it is charged are decided in the library. Prefect's own
result cache is off (``NO_CACHE``): reuse is decided from the run directories,
which survive a killed worker or flow, and whose keys cover the library source.
Retries back off exponentially and only follow transient errors (I/O, a lost
worker); bad input fails at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from datapruning.config import PipelineConfig, load_config
from datapruning.errors import DataPruningError
from datapruning.pipeline import recorded, score_cells, train_cells
from datapruning.pipeline.failures import is_transient
from datapruning.pipeline.recipes import StudentRecipe
from datapruning.report import write_report
from datapruning.train.settings import DynamicsConfig


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


def retrying(task_: Any, retries: int, delay: float) -> Any:
    """``task_`` with ``retries`` retries after ``delay``, 2x ``delay``, 4x ``delay``... seconds."""
    return task_.with_options(
        retries=retries,
        retry_delay_seconds=[delay * 2**i for i in range(retries)] or 0,
        retry_condition_fn=_transient,
    )


@task(name="train-teacher", cache_policy=NO_CACHE)
def teacher_task(
    cfg: PipelineConfig, seed: int, refresh: bool, record: DynamicsConfig | None = None
) -> dict[str, Any]:
    """``record``: the dynamics the full-data run records (scoring.source: runs)."""
    result = train_cells.run_teacher(cfg, seed, record=record, refresh=refresh)
    get_run_logger().info(
        "%s: %s, %.1f%% test accuracy, %.1f s training + %.2f s logits",
        result["run"],
        result["status"],
        100 * result["final_test_acc"],
        result["train_seconds"],
        result["logits_seconds"],
    )
    return result


@task(name="score-group", cache_policy=NO_CACHE)
def score_group_task(cfg: PipelineConfig, metric: str, seeds: list[int]) -> list[int]:
    if score_cells.reusable_scores(cfg, metric) is not None:
        return []
    return score_cells.score_group(cfg, metric, seeds)


@task(name="prepare-shards", cache_policy=NO_CACHE)
def prepare_shards_task(cfg: PipelineConfig, metric: str, seeds: list[int] | None) -> float:
    if score_cells.reusable_scores(cfg, metric) is not None:
        return 0.0
    return score_cells.prepare_shards(cfg, metric, seeds)


@task(name="score-shard", cache_policy=NO_CACHE)
def score_shard_task(cfg: PipelineConfig, metric: str, number: int, count: int) -> str | None:
    if score_cells.reusable_scores(cfg, metric) is not None:
        return None
    return score_cells.score_shard(cfg, metric, number, count)


@task(name="recorded-scores", cache_policy=NO_CACHE)
def recorded_scores_task(cfg: PipelineConfig, metric: str, seeds: list[int]) -> dict[str, Any]:
    """The mean of what the full-data runs of ``seeds`` recorded (scoring.source: runs)."""
    record = recorded.combine_recorded(cfg, metric, seeds)
    get_run_logger().info(
        "%s scores from the full-data runs %s (%s): %.2f s recording -> %s",
        metric,
        seeds,
        "reused" if record["reused"] else "combined",
        record["seconds"],
        record["path"],
    )
    return record


@task(name="merge-scores", cache_policy=NO_CACHE)
def merge_scores_task(cfg: PipelineConfig, metric: str) -> dict[str, Any]:
    record = score_cells.reusable_scores(cfg, metric) or score_cells.merge_scores(cfg, metric)
    get_run_logger().info(
        "%s scores (%s): %.1f s -> %s",
        metric,
        "reused" if record["reused"] else "computed",
        record["seconds"],
        record["path"],
    )
    return record


@task(name="train-student", cache_policy=NO_CACHE)
def student_task(
    cfg: PipelineConfig,
    recipe: StudentRecipe,
    scores: dict[str, Any] | None,
    teacher: dict[str, Any] | None,
    refresh: bool,
) -> dict[str, Any]:
    record = train_cells.run_student(cfg, recipe, scores, teacher, refresh=refresh)
    get_run_logger().info(
        "%s: %s, %.1f%% test accuracy, %.1f s training",
        record["run"],
        record["status"],
        100 * record["final_test_acc"],
        record["train_seconds"],
    )
    return record


@task(name="report", cache_policy=NO_CACHE)
def report_task(
    cfg: PipelineConfig, title: str, root: Path | None = None, command: str | None = None
) -> str:
    """The report of one experiment, or with ``root`` of a whole sweep (every experiment);
    ``command`` is what the report records as having made it (a worker's argv is not)."""
    path, text = write_report(
        root or cfg.run_root,
        cfg.report.target_drop,
        title=title,
        command=command,
    )
    create_markdown_artifact(
        key=artifact_key("tta-report", title),
        markdown=text,
        description=f"Time-to-accuracy report of {title} ({path})",
    )
    return str(path)


def artifact_key(prefix: str, name: str) -> str:
    # Artifact keys may hold only lowercase letters, digits and dashes.
    return f"{prefix}-" + (re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "run")


def config_of(config: str | PipelineConfig, overrides: list[str] | None) -> PipelineConfig:
    """The flow's config: ``config`` loaded with ``overrides``, or as given when loaded."""
    if not isinstance(config, PipelineConfig):
        return load_config(config, overrides)
    if overrides:
        raise DataPruningError(
            "overrides apply to a config file; this config is loaded already, so set them "
            "in it (load_config(path, overrides))"
        )
    return config


def scoring_tasks(retries: int, retry_delay: float) -> dict[str, Any]:
    """The task of each kind of scoring cell, with retries."""
    return {
        "group": retrying(score_group_task, retries, retry_delay),
        "prepare": retrying(prepare_shards_task, retries, retry_delay),
        "shard": retrying(score_shard_task, retries, retry_delay),
        "merge": retrying(merge_scores_task, retries, retry_delay),
        "runs": retrying(recorded_scores_task, retries, retry_delay),
    }
