"""The main job as Prefect flows: teachers -> scores -> the student grid -> report.

``pipeline`` runs one experiment, ``sweep`` every dataset x model of a config's
``sweep`` section (each metric and sparsity target of it in the students grid):

1. train the full-data model of each seed (the baseline and the KD teacher) and
   its logits on the training set;
2. score the training set with each metric a student uses; the seed groups of
   seed-group metrics (el2n, grand, forgetting) fan out and merge into one file,
   and with ``scoring.shards`` the per-example passes too (flows.tasks.submit_scores);
3. train every student, each as soon as the teacher and scores it reads are
   done (one that reads neither starts with the teachers); a cell that fails
   for good is reported with its error and the others finish;
4. write report.md + tta.png per experiment, publish them as a markdown artifact,
   the results as a table artifact, and the progress while cells finish.

Cells run on the task runner chosen by ``runner`` (flows/runners.py): one after
another in this process (``sequential``, the default), a process pool, or Dask
workers. Everything a cell does is in ``datapruning.orchestration``; this
module only orders the cells. Both flows take the config's path and overrides,
so a deployment can run them with plain parameters.
"""

from __future__ import annotations

import math
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed

from datapruning import orchestration as orch
from datapruning.config import PipelineConfig, load_config
from datapruning.errors import DataPruningError
from datapruning.flows.runners import task_runner
from datapruning.flows.tasks import (
    artifact_key,
    report_task,
    retrying,
    student_task,
    submit_scores,
    teacher_task,
)
from datapruning.recipes import Recipe, full_run_name


@flow(name="datapruning-pipeline")
def pipeline(
    config: str,
    overrides: list[str] | None = None,
    runner: str = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
    refresh: bool = False,
    retries: int = 2,
    retry_delay: float = 2.0,
) -> dict[str, Any]:
    """Teachers, scores, students and the time-to-accuracy report of one experiment."""
    cfg = load_config(config, overrides)
    if len(orch.experiments(cfg)) != 1:
        raise DataPruningError(
            "the config's sweep section lists several datasets or models; run the sweep flow"
        )
    return _run(
        cfg, config, overrides, runner, dask_address, workers, refresh, retries, retry_delay
    )


@flow(name="datapruning-sweep")
def sweep(
    config: str,
    overrides: list[str] | None = None,
    runner: str = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
    refresh: bool = False,
    retries: int = 2,
    retry_delay: float = 2.0,
) -> dict[str, Any]:
    """Every experiment of the config's sweep grid, one report each."""
    cfg = load_config(config, overrides)
    return _run(
        cfg, config, overrides, runner, dask_address, workers, refresh, retries, retry_delay
    )


def _run(
    cfg: PipelineConfig,
    config: str,
    overrides: list[str] | None,
    runner: str,
    dask_address: str | None,
    workers: int | None,
    refresh: bool,
    retries: int,
    retry_delay: float,
) -> dict[str, Any]:
    orch.experiments(cfg)  # bad grids fail before a runner starts
    with task_runner(runner, cfg.run_root, dask_address=dask_address, workers=workers) as tr:
        # The cells run in a subflow: a flow's task runner is fixed when it starts.
        result = cells.with_options(task_runner=tr)(
            config, overrides, refresh, retries, retry_delay
        )
    get_run_logger().info(orch.describe_tally(result["counts"]))
    return result


@flow(name="datapruning-cells")
def cells(
    config: str,
    overrides: list[str] | None = None,
    refresh: bool = False,
    retries: int = 2,
    retry_delay: float = 2.0,
) -> dict[str, Any]:
    """Fan the cells of every experiment out on this flow's task runner."""
    cfg = load_config(config, overrides)
    exps = orch.experiments(cfg)
    teacher_t = retrying(teacher_task, retries, retry_delay)
    student_t = retrying(student_task, retries, retry_delay)
    total = sum(len(e.teacher_seeds) + len(e.scored_metrics) + len(e.recipes) for e in exps)
    progress = _Progress(cfg.name, total)

    # Teachers and scores of every experiment start at once; each student starts as
    # soon as what it reads is done (one without KD or scores starts with the
    # teachers), so no worker idles while a cell it does not need finishes.
    upstream: dict[Any, tuple[str, int, Any]] = {}
    for i, exp in enumerate(exps):
        for seed in exp.teacher_seeds:
            upstream[teacher_t.submit(exp.cfg, seed, refresh)] = ("teacher", i, seed)
        for metric in exp.scored_metrics:
            if refresh:
                orch.clear_scores(exp.cfg, metric)
            merge = submit_scores(exp.cfg, metric, retries, retry_delay)
            upstream[merge] = ("scores", i, metric)
    records: list[dict[str, Any]] = []
    done: dict[tuple[str, int, Any], Any] = {}
    waiting = [(i, recipe) for i, exp in enumerate(exps) for recipe in exp.recipes]
    students: dict[Any, tuple[orch.Experiment, Recipe]] = {}

    def start_ready() -> None:
        nonlocal waiting
        blocked = []
        for i, recipe in waiting:
            exp = exps[i]
            needs = [("teacher", i, recipe.seed)] if recipe.kd else []
            needs += [("scores", i, recipe.metric)] if recipe.needs_scores else []
            if any(key not in done for key in needs):
                blocked.append((i, recipe))
                continue
            teacher = done[needs[0]] if recipe.kd else None
            table = done[needs[-1]] if recipe.needs_scores else None
            missing = next((x for x in (teacher, table) if isinstance(x, Failure)), None)
            if missing is not None:
                what = "teacher" if isinstance(teacher, Failure) else "scoring"
                error = orch.record_failure(
                    exp.root / recipe.run_name, recipe, f"{what} failed: {missing}"
                )
                records.append(error | {"experiment": exp.cfg.name})
                progress.step()
                continue
            students[student_t.submit(exp.cfg, recipe, table, teacher, refresh)] = (exp, recipe)
        waiting = blocked

    start_ready()
    for future in as_completed(list(upstream)):
        progress.step()
        kind, i, what = key = upstream[future]
        value = done[key] = _outcome(future)
        exp = exps[i]
        if kind == "teacher":
            if isinstance(value, Failure):
                records.append(_failed(exp, full_run_name(what), "full", value))
            else:
                records.append(value | {"experiment": exp.cfg.name})
        start_ready()
    for future in as_completed(list(students)):
        progress.step()
        exp, recipe = students[future]
        value = _outcome(future)
        if isinstance(value, Failure):
            value = orch.record_failure(exp.root / recipe.run_name, recipe, value)
        records.append(value | {"experiment": exp.cfg.name})
    records.sort(key=lambda record: (record["experiment"], record["run"]))

    reports = []
    for exp in exps:
        title = exp.cfg.name if len(exps) == 1 else f"{cfg.name} / {exp.cfg.name}"
        value = _outcome(report_task.submit(exp.cfg, title))
        if isinstance(value, Failure):
            get_run_logger().error("no report for %s: %s", exp.root, value)
        else:
            reports.append(value)
    counts = orch.tally(records)
    create_table_artifact(
        key=artifact_key("results", cfg.name),
        table=[_jsonable(record) for record in records],
        description=f"Every run of {cfg.name}: {orch.describe_tally(counts)}",
    )
    return {"reports": reports, "counts": counts, "records": records}


class Failure(str):
    """Why a cell failed for good, in one line (a task's result is never one)."""


def _outcome(future: Any) -> Any:
    """The task's result, or the Failure that says why it failed for good."""
    future.wait()
    state = future.state
    if state.is_completed():
        return future.result()
    return Failure(orch.describe_error(state.result(raise_on_failure=False)))


def _failed(exp: orch.Experiment, run: str, recipe: str, error: str) -> dict[str, Any]:
    return {
        "experiment": exp.cfg.name,
        "run": run,
        "recipe": recipe,
        "status": "failed",
        "final_test_acc": math.nan,
        "train_seconds": math.nan,
        "end_to_end_seconds": math.nan,
        "error": error,
    }


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
