"""The main job as Prefect flows: teachers -> scores -> the student grid -> report.

``pipeline`` runs one experiment, ``sweep`` every dataset x model of a config's
``sweep`` section (each metric and sparsity target of it in the students grid):

1. train the full-data model of each seed (the baseline and the KD teacher) and
   its logits on the training set;
2. score the training set with each metric a student uses; the seed groups of
   seed-group metrics (el2n, grand, forgetting) fan out and merge into one file,
   and with ``scoring.shards`` the per-example passes too (prepare, shards, merge);
3. train every student, each as soon as the teacher and scores it reads are
   done (one that reads neither can start with the teachers); a cell that fails
   for good is reported with its error and the others finish;
4. write report.md + tta.png per experiment, publish them as a markdown artifact,
   the results as a table artifact, and the progress while cells finish.

Cells run on the task runner chosen by ``runner`` (flows/runners.py): one after
another in this process (``sequential``, the default), a process pool, or Dask
workers. A cell goes to the runner only when one of its slots is free, the
most urgent ready cell first (``_CellQueue``). Everything a cell does is in
``datapruning.orchestration``; this module only orders the cells. Both flows take the config's path and overrides,
so a deployment can run them with plain parameters.
"""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
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
    merge_scores_task,
    prepare_shards_task,
    report_task,
    retrying,
    score_group_task,
    score_shard_task,
    student_task,
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
        result = cells.with_options(task_runner=tr.task_runner)(
            config, overrides, refresh, retries, retry_delay, tr.slots
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
    slots: int | None = None,
) -> dict[str, Any]:
    """Fan the cells of every experiment out on this flow's task runner.

    ``slots``: how many cells the runner runs at once (None: send every cell as
    soon as it can start and let the runner queue them).
    """
    cfg = load_config(config, overrides)
    exps = orch.experiments(cfg)
    teacher_t = retrying(teacher_task, retries, retry_delay)
    group_t = retrying(score_group_task, retries, retry_delay)
    prepare_t = retrying(prepare_shards_task, retries, retry_delay)
    shard_t = retrying(score_shard_task, retries, retry_delay)
    merge_t = retrying(merge_scores_task, retries, retry_delay)
    student_t = retrying(student_task, retries, retry_delay)
    total = sum(len(e.teacher_seeds) + len(e.scored_metrics) + len(e.recipes) for e in exps)
    progress = _Progress(cfg.name, total)
    queue = _CellQueue(slots)
    students: dict[tuple[Any, ...], Recipe] = {}

    for i, exp in enumerate(exps):
        # A sweep's experiments differ in size: a cell's work is counted in full-data steps.
        steps = orch.full_steps(exp.cfg)
        for seed in exp.teacher_seeds:
            queue.add(
                ("teacher", i, seed), (*_TEACHER, -steps), [], teacher_t, exp.cfg, seed, refresh
            )
        for metric in exp.scored_metrics:
            if refresh:
                orch.clear_scores(exp.cfg, metric)
            groups = []
            count = orch.shard_count(exp.cfg, metric)
            if count > 1:
                # The seed groups train and save their models (proto: one cell fits the
                # encoder and centroids), then each shard scores its rows with them.
                prepared = []
                for n, seeds in enumerate(orch.seed_groups(exp.cfg, metric) or [None]):
                    prepared.append(("prepare", i, metric, n))
                    queue.add(prepared[-1], _SCORING, [], prepare_t, exp.cfg, metric, seeds)
                for number in range(1, count + 1):
                    groups.append(("shard", i, metric, number))
                    queue.add(
                        groups[-1], _SCORING, prepared, shard_t, exp.cfg, metric, number, count
                    )
            else:
                for n, seeds in enumerate(orch.seed_groups(exp.cfg, metric)):
                    groups.append(("group", i, metric, n))
                    queue.add(groups[-1], _SCORING, [], group_t, exp.cfg, metric, seeds)
            queue.add(("scores", i, metric), _MERGE, groups, merge_t, exp.cfg, metric)
        for recipe in exp.recipes:
            students[("student", i, recipe.run_name)] = recipe
            teacher = ("teacher", i, recipe.seed) if recipe.kd else None
            table = ("scores", i, recipe.metric) if recipe.needs_scores else None
            queue.add(
                ("student", i, recipe.run_name),
                (_STUDENT, -_expected_cost(recipe) * steps),
                [key for key in (teacher, table) if key is not None],
                student_t,
                exp.cfg,
                recipe,
                _Result(table),
                _Result(teacher),
                refresh,
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
                records.append(_failed(exp, full_run_name(key[2]), "full", value))
            else:
                records.append(value | {"experiment": exp.cfg.name})
        elif kind == "student":
            recipe = students[key]
            if isinstance(value, Failure):
                value = orch.record_failure(exp.root / recipe.run_name, recipe, value)
            records.append(value | {"experiment": exp.cfg.name})
    records.sort(key=lambda record: (record["experiment"], record["run"]))

    reports = []
    command = shlex.join(sys.argv)  # this process's: the cells run elsewhere
    for exp in exps:
        title = exp.cfg.name if len(exps) == 1 else f"{cfg.name} / {exp.cfg.name}"
        value = _outcome(report_task.submit(exp.cfg, title, command=command))
        if isinstance(value, Failure):
            get_run_logger().error("no report for %s: %s", exp.root, value)
        else:
            reports.append(value)
    if len(exps) > 1 and reports:
        # The sweep's own report: every experiment side by side (speed-up against size).
        value = _outcome(report_task.submit(cfg, cfg.name, cfg.run_root, command))
        if isinstance(value, Failure):
            get_run_logger().error("no report for %s: %s", cfg.run_root, value)
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


# Which ready cell goes to the runner first (lower first): a merge of scores (quick,
# and every student of that metric waits for it), teachers (largest experiment first) and
# scoring groups (students wait for them), then students (most work first).
_MERGE, _TEACHER, _SCORING, _STUDENT = (0,), (1,), (2,), 3


def _expected_cost(recipe: Recipe) -> float:
    """A student's training work relative to its experiment's full-data run: longest first
    (with the experiment's size) ends the sweep on short cells, not with one worker
    training the longest while the others idle."""
    examples = 1 - recipe.prune / 2 if recipe.is_infobatch and recipe.prune else recipe.fraction
    if recipe.budget == "steps":
        examples = 1.0
    return examples * (1.1 if recipe.kd else 1.0)  # the teacher's forward pass, roughly


@dataclass(frozen=True)
class _Result:
    """An argument filled with another cell's result when this cell is sent (None: none)."""

    key: tuple[Any, ...] | None


class _CellQueue:
    """Cells wait here until what they read is done and a runner slot is free.

    Sent all at once, cells queue in the runner first come, first served: on Dask
    with 2 workers a 0.1 s merge of scores waited behind two students of 20 s while
    six students waited for it (bench/orchestration.py, a profile at stop 12). Here
    a cell goes to the runner only when one of ``slots`` is free, the most urgent
    ready one first (see ``_MERGE``); ``slots=None`` sends each as soon as it can
    start. A cell whose input failed for good is not sent: it fails with that reason.
    """

    def __init__(self, slots: int | None) -> None:
        self.slots = slots
        self.waiting: dict[tuple[Any, ...], tuple[Any, int, list[Any], Any, tuple[Any, ...]]] = {}
        self.done: dict[tuple[Any, ...], Any] = {}

    def add(
        self, key: tuple[Any, ...], priority: Any, needs: list[Any], task_: Any, *args: Any
    ) -> None:
        self.waiting[key] = (priority, len(self.waiting), needs, task_, args)

    def run(self) -> Iterator[tuple[tuple[Any, ...], Any]]:
        """Yield ``(key, result or Failure)`` of every cell as it finishes."""
        running: dict[Any, tuple[Any, ...]] = {}
        while self.waiting or running:
            doomed = self._doomed()
            yield from doomed
            ready = sorted(
                (entry[:2], key)
                for key, entry in self.waiting.items()
                if all(need in self.done for need in entry[2])
            )
            for _, key in ready:
                if self.slots is not None and len(running) >= self.slots:
                    break
                _, _, _, task_, args = self.waiting.pop(key)
                filled = [self.done.get(a.key) if isinstance(a, _Result) else a for a in args]
                running[task_.submit(*filled)] = key
            if not running:
                if not doomed:  # nothing runs, nothing failed: the rest can never start
                    raise RuntimeError(f"cells wait for inputs no cell makes: {list(self.waiting)}")
                continue  # cells whose input failed were just resolved; look again
            future = next(as_completed(list(running)))
            key = running.pop(future)
            self.done[key] = _outcome(future)
            yield key, self.done[key]

    def _doomed(self) -> list[tuple[tuple[Any, ...], Failure]]:
        """Resolve the waiting cells whose input failed for good, and say why."""
        doomed = []
        for key, (_, _, needs, _, _) in list(self.waiting.items()):
            failed = next((n for n in needs if isinstance(self.done.get(n), Failure)), None)
            if failed is None:
                continue
            reason = self.done[failed]
            what = "teacher" if failed[0] == "teacher" else "scoring"
            if not reason.startswith(f"{what} failed: "):
                reason = Failure(f"{what} failed: {reason}")
            del self.waiting[key]
            self.done[key] = reason
            doomed.append((key, reason))
        return doomed


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
