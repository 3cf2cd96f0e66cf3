"""The main job as Prefect flows: teachers -> scores -> the student grid -> report.

``pipeline`` runs one experiment, ``sweep`` every dataset x model of a config's
``sweep`` section (each metric and sparsity target of it in the students grid):

1. train the full-data model of each seed (the baseline and the KD teacher) and
   its logits on the training set;
2. score the training set with each metric a student uses; the seed groups of
   seed-group metrics (el2n, grand, forgetting) fan out and merge into one file,
   and with ``scoring.shards`` the per-example passes too (prepare, shards, merge);
   with ``scoring.source: runs`` the full-data runs record el2n and forgetting as
   they train and one cell averages their files once they finish (no model trained);
3. train every student, each as soon as the teacher and scores it reads are
   done (one that reads neither can start with the teachers); a cell that fails
   for good is reported with its error and the others finish;
4. write report.md + tta.png per experiment, publish them as a markdown artifact,
   the results as a table artifact, and the progress while cells finish.

Cells run on the task runner chosen by ``runner`` (flows/runners.py): one after
another in this process (``sequential``, the default), a process pool, or Dask
workers. A cell goes to the runner only when one of its slots is free, the
most urgent ready cell first (``flows/queue.py``). Everything a cell does is in
``datapruning.pipeline``; this module only orders the cells. Both flows take the
config's path and overrides, so a deployment can run them with plain parameters,
or a config loaded already (``datapruning run``): a run reads its config once.
"""

from __future__ import annotations

import math
import shlex
import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from datapruning.config import PipelineConfig
from datapruning.errors import DataPruningError
from datapruning.flows.queue import CellQueue, Result, add_scoring, outcome
from datapruning.flows.runners import task_runner
from datapruning.flows.tasks import (
    artifact_key,
    config_of,
    report_task,
    retrying,
    scoring_tasks,
    student_task,
    teacher_task,
)
from datapruning.pipeline.accounting import describe_tally, tally
from datapruning.pipeline.data import full_steps
from datapruning.pipeline.failures import Failure, failed_record, record_failure
from datapruning.pipeline.grid import experiments
from datapruning.pipeline.order import student_priority, teacher_priority
from datapruning.pipeline.recipes import StudentRecipe, full_run_name
from datapruning.pipeline.score_cells import clear_scores


@flow(name="datapruning-pipeline")
def pipeline(
    config: str | PipelineConfig,
    overrides: list[str] | None = None,
    runner: str = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
    refresh: bool = False,
    retries: int = 2,
    retry_delay: float = 2.0,
) -> dict[str, Any]:
    """Teachers, scores, students and the time-to-accuracy report of one experiment."""
    cfg = config_of(config, overrides)
    if len(experiments(cfg)) != 1:
        raise DataPruningError(
            "the config's sweep section lists several datasets or models; run the sweep flow"
        )
    return _run(cfg, runner, dask_address, workers, refresh, retries, retry_delay)


@flow(name="datapruning-sweep")
def sweep(
    config: str | PipelineConfig,
    overrides: list[str] | None = None,
    runner: str = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
    refresh: bool = False,
    retries: int = 2,
    retry_delay: float = 2.0,
) -> dict[str, Any]:
    """Every experiment of the config's sweep grid, one report each."""
    cfg = config_of(config, overrides)
    return _run(cfg, runner, dask_address, workers, refresh, retries, retry_delay)


def _run(
    cfg: PipelineConfig,
    runner: str,
    dask_address: str | None,
    workers: int | None,
    refresh: bool,
    retries: int,
    retry_delay: float,
) -> dict[str, Any]:
    experiments(cfg)  # bad grids fail before a runner starts
    with task_runner(runner, cfg.run_root, dask_address=dask_address, workers=workers) as tr:
        # The cells run in a subflow: a flow's task runner is fixed when it starts.
        result = cells.with_options(task_runner=tr.task_runner)(
            cfg, None, refresh, retries, retry_delay, tr.slots
        )
    get_run_logger().info(describe_tally(result["counts"]))
    return result


@flow(name="datapruning-cells")
def cells(
    config: str | PipelineConfig,
    overrides: list[str] | None = None,
    refresh: bool = False,
    retries: int = 2,
    retry_delay: float = 2.0,
    slots: int | None = None,
) -> dict[str, Any]:
    """Fan the cells of every experiment out on this flow's task runner.

    ``slots``: how many cells the runner runs at once (None: send every cell as
    soon as it can start and let the runner queue them).
    """
    cfg = config_of(config, overrides)
    exps = experiments(cfg)
    teacher_t = retrying(teacher_task, retries, retry_delay)
    scoring_t = scoring_tasks(retries, retry_delay)
    student_t = retrying(student_task, retries, retry_delay)
    total = sum(len(e.teacher_seeds) + len(e.scored_metrics) + len(e.recipes) for e in exps)
    progress = _Progress(cfg.name, total)
    queue = CellQueue(slots)
    students: dict[tuple[Any, ...], StudentRecipe] = {}

    for i, exp in enumerate(exps):
        # A sweep's experiments differ in size: a cell's work is counted in full-data steps.
        steps = full_steps(exp.cfg)
        full_runs = {seed: ("teacher", i, seed) for seed in exp.teacher_seeds}
        record = exp.record  # what the full-data runs record (scoring.source: runs)
        for seed, key in full_runs.items():
            queue.add(
                key, teacher_priority(steps), [], teacher_t, exp.cfg, seed, refresh, record,
                width=exp.cfg.train.nproc,
            )  # fmt: skip
        for metric in exp.scored_metrics:
            if refresh:
                clear_scores(exp.cfg, metric)
            add_scoring(queue, i, exp.cfg, metric, scoring_t, full_runs)
        for recipe in exp.recipes:
            students[("student", i, recipe.run_name)] = recipe
            teacher = ("teacher", i, recipe.seed) if recipe.kd else None
            table = ("scores", i, recipe.metric) if recipe.needs_scores else None
            queue.add(
                ("student", i, recipe.run_name),
                student_priority(recipe, steps),
                [key for key in (teacher, table) if key is not None],
                student_t,
                exp.cfg,
                recipe,
                Result(table),
                Result(teacher),
                refresh,
                width=exp.cfg.train.nproc,  # its processes take as many slots
            )

    records: list[dict[str, Any]] = []
    for key, value in queue.run():
        kind, i = key[0], key[1]
        exp = exps[i]
        if kind in ("group", "prepare", "shard"):
            continue  # its merge reports the scoring
        progress.step()
        if kind == "teacher":
            if isinstance(value, Failure):
                record = failed_record(full_run_name(key[2]), "full", value)
                records.append(record | {"experiment": exp.cfg.name})
            else:
                records.append(value | {"experiment": exp.cfg.name})
        elif kind == "student":
            recipe = students[key]
            if isinstance(value, Failure):
                value = record_failure(exp.root / recipe.run_name, recipe, value)
            records.append(value | {"experiment": exp.cfg.name})
    records.sort(key=lambda record: (record["experiment"], record["run"]))

    reports = []
    command = shlex.join(sys.argv)  # this process's: the cells run elsewhere
    for exp in exps:
        title = exp.cfg.name if len(exps) == 1 else f"{cfg.name} / {exp.cfg.name}"
        value = outcome(report_task.submit(exp.cfg, title, command=command))
        if isinstance(value, Failure):
            get_run_logger().error("no report for %s: %s", exp.root, value)
        else:
            reports.append(value)
    if len(exps) > 1 and reports:
        # The sweep's own report: every experiment side by side (speed-up against size).
        value = outcome(report_task.submit(cfg, cfg.name, cfg.run_root, command))
        if isinstance(value, Failure):
            get_run_logger().error("no report for %s: %s", cfg.run_root, value)
        else:
            reports.append(value)
    counts = tally(records)
    create_table_artifact(
        key=artifact_key("results", cfg.name),
        table=[_jsonable(record) for record in records],
        description=f"Every run of {cfg.name}: {describe_tally(counts)}",
    )
    return {"reports": reports, "counts": counts, "records": records}


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("experiment", "run", "recipe", "status", "final_test_acc", "train_seconds")
    row = {key: record.get(key) for key in (*keys, "end_to_end_seconds", "error")}
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


class _Progress:
    """A progress artifact that moves as cells finish."""

    def __init__(self, name: str, total: int):
        self.total = max(total, 1)
        self.done = 0
        self.id = create_progress_artifact(
            progress=0.0,
            key=artifact_key("progress", name),
            description=f"Cells of {name} finished (of {total})",
        )

    def step(self) -> None:
        self.done += 1
        update_progress_artifact(self.id, progress=100.0 * min(self.done / self.total, 1.0))
