"""The Prefect tasks: one call each into datapruning.orchestration, with retries.

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

from datapruning import orchestration as orch
from datapruning.config import PipelineConfig
from datapruning.recipes import Recipe
from datapruning.report import write_report


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and orch.is_transient(exc)


def retrying(task_: Any, retries: int, delay: float) -> Any:
    """``task_`` with ``retries`` retries after ``delay``, 2x ``delay``, 4x ``delay``... seconds."""
    return task_.with_options(
        retries=retries,
        retry_delay_seconds=[delay * 2**i for i in range(retries)] or 0,
        retry_condition_fn=_transient,
    )


@task(name="train-teacher", cache_policy=NO_CACHE)
def teacher_task(cfg: PipelineConfig, seed: int, refresh: bool) -> dict[str, Any]:
    record = orch.run_teacher(cfg, seed, refresh=refresh)
    get_run_logger().info(
        "%s: %s, %.1f%% test accuracy, %.1f s training + %.2f s logits",
        record["run"],
        record["status"],
        100 * record["final_test_acc"],
        record["train_seconds"],
        record["logits_seconds"],
    )
    return record


@task(name="score-group", cache_policy=NO_CACHE)
def score_group_task(cfg: PipelineConfig, metric: str, seeds: list[int]) -> list[int]:
    if orch.reusable_scores(cfg, metric) is not None:
        return []
    return orch.score_group(cfg, metric, seeds)


@task(name="prepare-shards", cache_policy=NO_CACHE)
def prepare_shards_task(cfg: PipelineConfig, metric: str, seeds: list[int] | None) -> float:
    if orch.reusable_scores(cfg, metric) is not None:
        return 0.0
    return orch.prepare_shards(cfg, metric, seeds)


@task(name="score-shard", cache_policy=NO_CACHE)
def score_shard_task(cfg: PipelineConfig, metric: str, number: int, count: int) -> str | None:
    if orch.reusable_scores(cfg, metric) is not None:
        return None
    return orch.score_shard(cfg, metric, number, count)


@task(name="merge-scores", cache_policy=NO_CACHE)
def merge_scores_task(cfg: PipelineConfig, metric: str) -> dict[str, Any]:
    record = orch.reusable_scores(cfg, metric) or orch.merge_scores(cfg, metric)
    get_run_logger().info(
        "%s scores (%s): %.1f s -> %s",
        metric,
        "reused" if record["reused"] else "computed",
        record["seconds"],
        record["path"],
    )
    return record


def submit_scores(cfg: PipelineConfig, metric: str, retries: int, retry_delay: float) -> Any:
    """Fan one scoring out on the flow's task runner; the future of its merge cell.

    Unsharded: one cell per seed group (orch.seed_groups), then the merge scores
    whatever is missing. With ``scoring.shards`` = N > 1 (el2n, grand, proto): the
    seed groups train and save their models (proto: one cell fits the encoder and
    centroids), then N cells each score one block of rows with them, then the
    merge joins the N shard files.
    """
    merge_t = retrying(merge_scores_task, retries, retry_delay)
    groups = orch.seed_groups(cfg, metric)
    count = orch.shard_count(cfg, metric)
    if count > 1:
        prepare_t = retrying(prepare_shards_task, retries, retry_delay)
        shard_t = retrying(score_shard_task, retries, retry_delay)
        prepared = [prepare_t.submit(cfg, metric, group) for group in groups] or [
            prepare_t.submit(cfg, metric, None)
        ]
        cells = [
            shard_t.submit(cfg, metric, number, count, wait_for=prepared)
            for number in range(1, count + 1)
        ]
    else:
        group_t = retrying(score_group_task, retries, retry_delay)
        cells = [group_t.submit(cfg, metric, group) for group in groups]
    return merge_t.submit(cfg, metric, wait_for=cells)


@task(name="train-student", cache_policy=NO_CACHE)
def student_task(
    cfg: PipelineConfig,
    recipe: Recipe,
    scores: dict[str, Any] | None,
    teacher: dict[str, Any] | None,
    refresh: bool,
) -> dict[str, Any]:
    record = orch.run_student(cfg, recipe, scores, teacher, refresh=refresh)
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
