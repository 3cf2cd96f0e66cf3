"""The cell queue of the flows (:class:`CellQueue`), and a scoring's cells added to it.

Both the pipeline and the score flow send their cells through one queue, so a
cell goes to the runner only when a slot is free and the most urgent ready one
goes first; a scoring's cells come from one list
(:func:`datapruning.pipeline.score_cells.fan_out`) added by :func:`add_scoring`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prefect.futures import as_completed

from datapruning.config import PipelineConfig
from datapruning.errors import DataPruningError
from datapruning.pipeline.failures import Failure, describe_error
from datapruning.pipeline.order import MERGE, SCORING
from datapruning.pipeline.recorded import from_runs
from datapruning.pipeline.score_cells import fan_out

Key = tuple[Any, ...]


@dataclass(frozen=True)
class Result:
    """An argument filled with another cell's result when this cell is sent (None: none)."""

    key: Key | None


class CellQueue:
    """Cells wait here until what they read is done and a runner slot is free.

    Sent all at once, cells queue in the runner first come, first served: on Dask
    with 2 workers a 0.1 s merge of scores waited behind two students of 20 s while
    six students waited for it (bench/orchestration.py, a profile at stop 12). Here
    a cell goes to the runner only when one of ``slots`` is free, the most urgent
    ready one first (see :mod:`datapruning.pipeline.order`); ``slots=None`` sends each
    as soon as it can start. A cell whose input failed for good is not sent: it
    fails with that reason.
    """

    def __init__(self, slots: int | None) -> None:
        self.slots = slots
        self.waiting: dict[Key, tuple[Any, int, list[Any], Any, tuple[Any, ...]]] = {}
        self.done: dict[Key, Any] = {}
        self.widths: dict[Key, int] = {}

    def add(
        self, key: Key, priority: Any, needs: list[Any], task_: Any, *args: Any, width: int = 1
    ) -> None:
        """Queue a cell; ``width``: the slots it takes (a run on train.nproc processes)."""
        self.waiting[key] = (priority, len(self.waiting), needs, task_, args)
        self.widths[key] = width

    def run(self) -> Iterator[tuple[Key, Any]]:
        """Yield ``(key, result or Failure)`` of every cell as it finishes."""
        running: dict[Any, Key] = {}
        while self.waiting or running:
            doomed = self._doomed()
            yield from doomed
            ready = sorted(
                (entry[:2], key)
                for key, entry in self.waiting.items()
                if all(need in self.done for need in entry[2])
            )
            for _, key in ready:
                if not self.fits(key, list(running.values())):
                    break
                _, _, _, task_, args = self.waiting.pop(key)
                filled = [self.done.get(a.key) if isinstance(a, Result) else a for a in args]
                running[task_.submit(*filled)] = key
            if not running:
                if not doomed:  # nothing runs, nothing failed: the rest can never start
                    raise RuntimeError(f"cells wait for inputs no cell makes: {list(self.waiting)}")
                continue  # cells whose input failed were just resolved; look again
            future = next(as_completed(list(running)))
            key = running.pop(future)
            self.done[key] = outcome(future)
            yield key, self.done[key]

    def fits(self, key: Key, running: list[Key]) -> bool:
        """Whether cell ``key`` can start beside the ``running`` ones: its width in free
        slots (a cell wider than every slot still runs, alone)."""
        if self.slots is None or not running:
            return True
        return sum(self.widths[k] for k in running) + self.widths[key] <= self.slots

    def _doomed(self) -> list[tuple[Key, Failure]]:
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


def outcome(future: Any) -> Any:
    """The task's result, or the Failure that says why it failed for good."""
    future.wait()
    state = future.state
    if state.is_completed():
        return future.result()
    return Failure(describe_error(state.result(raise_on_failure=False)))


def add_scoring(
    queue: CellQueue,
    experiment: int,
    cfg: PipelineConfig,
    metric: str,
    tasks: dict[str, Any],
    full_runs: dict[int, Key] | None = None,
) -> Key:
    """Add the cells of one scoring (``tasks``: the task of each kind of
    :class:`~datapruning.pipeline.score_cells.ScoringCell`); the key of its merge, whose
    result is the scores file's record.

    With ``scoring.source: runs`` a recordable metric is one cell that averages what the
    full-data runs recorded: it waits on ``full_runs`` (seed -> the run's cell key) and
    trains nothing.
    """
    if from_runs(cfg, metric):
        if not full_runs:
            raise DataPruningError(
                f"scoring.source is runs: {metric}'s scores come from the full-data runs of "
                "`datapruning run`; run that, or set scoring.source: ensemble to score alone"
            )
        key: Key = ("scores", experiment, metric)
        seeds = sorted(full_runs)
        queue.add(key, MERGE, [full_runs[s] for s in seeds], tasks["runs"], cfg, metric, seeds)
        return key
    keys: list[Key] = []
    for cell in fan_out(cfg, metric):
        if cell.kind == "merge":
            key = ("scores", experiment, metric)
        else:
            key = (cell.kind, experiment, metric, len(keys))
        needs = [keys[i] for i in cell.needs]
        priority = MERGE if cell.kind == "merge" else SCORING
        queue.add(key, priority, needs, tasks[cell.kind], cfg, metric, *cell.args)
        keys.append(key)
    return keys[-1]
