"""Reading run directories: each run's summary and curve, checked, and the crossing time.

The report computes nothing itself; it reads what training wrote (``summary.json`` and
``metrics.jsonl`` of each run, ``failure.json`` of a cell that failed for good,
``teacher_logits.json`` and the scores files' metadata), and refuses a file it cannot
trust with a one-line error before writing anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datapruning.errors import DataPruningError
from datapruning.train.loop import METRICS_NAME
from datapruning.train.summary import SUMMARY_NAME, check_summary_format

# Written by datapruning.pipeline: a cell that failed for good, and a teacher's logits cost.
FAILURE_NAME = "failure.json"
TEACHER_LOGITS_RECORD = "teacher_logits.json"
FULL_RECIPE = "full"
# What a report reads from a run's summary.json and from each metrics.jsonl line.
_SUMMARY_KEYS = {
    "final_test_acc",
    "best_test_acc",
    "train_seconds",
    "eval_seconds",
    "kept_fraction",
}
_POINT_KEYS = {"train_seconds", "test_acc"}


def crossing_seconds(points: Iterable[tuple[float, float]], target: float) -> float | None:
    """Training seconds at which ``(seconds, accuracy)`` evaluations first reach ``target``.

    Linear between the last evaluation below the target and the first at or above
    it; the first evaluation's own time when it already reached it; None if none did.
    """
    previous: tuple[float, float] | None = None
    for seconds, accuracy in points:
        if accuracy >= target:
            if previous is None:
                return float(seconds)
            before_s, before_acc = previous  # below the target, so accuracy > before_acc
            return before_s + (target - before_acc) / (accuracy - before_acc) * (seconds - before_s)
        previous = (seconds, accuracy)
    return None


@dataclass(frozen=True)
class RunRecord:
    path: Path
    summary: dict[str, Any]
    curve: list[dict[str, Any]]

    @property
    def recipe(self) -> str:
        return self.summary.get("recipe", self.path.name)

    @property
    def kd(self) -> bool:
        return bool(self.summary.get("kd"))

    @property
    def budget(self) -> str:
        return str(self.summary.get("budget") or "epochs")

    @property
    def experiment(self) -> Path:
        return self.path.parent

    def seconds_to(self, target: float) -> float | None:
        points = [(point["train_seconds"], point["test_acc"]) for point in self.curve]
        return crossing_seconds(points, target)

    def steps_to(self, target: float) -> float | None:
        """Optimizer steps to the target, interpolated like :meth:`seconds_to`: a measure of
        work that the machine's load does not move (None: not reached, or a log without steps)."""
        if not all(_is_number(point.get("step")) for point in self.curve):
            return None
        return crossing_seconds(
            [(point["step"], point["test_acc"]) for point in self.curve], target
        )

    @property
    def overhead_seconds(self) -> float:
        """Work done before this run could start: scoring, and for KD the teacher's
        training and its logits on the training set (the per-student view)."""
        return self.scoring_seconds + self.teacher_cost_seconds

    @property
    def scoring_seconds(self) -> float:
        return float(self.summary.get("scoring_seconds") or 0)

    @property
    def scores(self) -> str | None:
        """The scores this run read (None: none): the file the pipeline recorded in its
        summary, or ``train.data.scores`` of its config (``datapruning train``), else, for
        a run charged scoring without either (older runs), its recipe's metric."""
        record = self.summary.get("scores")
        if isinstance(record, dict) and isinstance(record.get("file"), str):
            return str(record["file"])
        config = self.summary.get("config")
        train = config.get("train") if isinstance(config, dict) else None
        data = train.get("data") if isinstance(train, dict) else None
        if isinstance(data, dict) and isinstance(data.get("scores"), str):
            return str(data["scores"])
        return self.recipe.split("-")[0] if self.scoring_seconds else None

    @property
    def teacher_cost_seconds(self) -> float:
        return self.teacher_train_seconds + self.teacher_logits_seconds

    @property
    def teacher_train_seconds(self) -> float:
        return float(self.summary.get("teacher_seconds") or 0) if self.kd else 0.0

    @property
    def teacher_logits_seconds(self) -> float:
        return float(self.summary.get("teacher_logits_seconds") or 0) if self.kd else 0.0

    @property
    def teacher(self) -> str | None:
        """The teacher's run name: the directory of its logits, else full-s<seed>."""
        if not self.kd:
            return None
        source = self.summary["kd"].get("teacher") if isinstance(self.summary["kd"], dict) else None
        if isinstance(source, str) and "/" in source:
            return Path(source).parent.name
        return f"full-s{self.summary.get('seed', 0)}"

    @property
    def sparsity(self) -> float | None:
        report = self.summary.get("sparsity")
        value = report.get("sparsity") if isinstance(report, dict) else None
        return float(value) if _is_number(value) else None


def load_run(path: str | os.PathLike[str]) -> RunRecord:
    path = Path(path)
    try:
        summary = json.loads((path / SUMMARY_NAME).read_text())
        lines = (path / METRICS_NAME).read_text().splitlines()
        curve = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise DataPruningError(
            f"run {str(path)!r} is incomplete or unreadable ({exc.__class__.__name__})"
        ) from None
    if isinstance(summary, dict):
        check_summary_format(path / SUMMARY_NAME, summary)
    if not isinstance(summary, dict) or not summary.keys() >= _SUMMARY_KEYS:
        raise DataPruningError(
            f"{str(path / SUMMARY_NAME)!r} is not a run summary; it needs {', '.join(sorted(_SUMMARY_KEYS))}"
        )
    if not isinstance(summary.get("recipe", path.name), str):
        raise DataPruningError(
            f"{str(path / SUMMARY_NAME)!r}: recipe is {summary['recipe']!r}, not a name; "
            "rerun the run or remove it"
        )
    if not curve or not all(isinstance(p, dict) and p.keys() >= _POINT_KEYS for p in curve):
        raise DataPruningError(
            f"{str(path / METRICS_NAME)!r} is not a run log; each line needs {', '.join(sorted(_POINT_KEYS))}"
        )
    records = [(repr(str(path / SUMMARY_NAME)), summary, _SUMMARY_KEYS)] + [
        (f"{str(path / METRICS_NAME)!r} line {i}", point, _POINT_KEYS)
        for i, point in enumerate(curve, 1)
    ]
    for where, record, keys in records:
        for key in sorted(keys):
            if not _is_number(record[key]):
                raise DataPruningError(
                    f"{where}: {key} is {record[key]!r}, not a number; rerun the run or remove it"
                )
    return RunRecord(path, summary, curve)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def find_runs(root: str | os.PathLike[str]) -> list[RunRecord]:
    """Every finished run (a directory holding summary.json) under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataPruningError(f"run directory {str(root)!r} not found")
    runs = [load_run(summary.parent) for summary in sorted(root.rglob(SUMMARY_NAME))]
    if not runs:
        raise DataPruningError(f"no finished runs (summary.json) under {str(root)!r}")
    return runs


def find_failures(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Cells of a pipeline or sweep that failed for good (their failure.json)."""
    failures = []
    for path in sorted(Path(root).rglob(FAILURE_NAME)):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            failures.append({"run": record.get("run", path.parent.name), **record, "_path": path})
    return failures


def shared_costs(root: str | os.PathLike[str], runs: list[RunRecord]) -> list[dict[str, Any]]:
    """The experiment's one-off costs: each teacher's training and logits, each scoring
    (``kind`` teacher, logits or scoring; ``cost`` is its label; a scoring recorded by the
    full-data runs says so, and ``in_training`` is its part inside their training time)."""
    from datapruning.scores import Scores

    root = Path(root)
    rows: list[dict[str, Any]] = []
    for run in runs:
        if run.recipe != FULL_RECIPE:
            continue
        name = run.path.name
        rows.append(
            {
                "cost": f"teacher {name}: training",
                "kind": "teacher",
                "seconds": run.summary["train_seconds"],
            }
        )
        try:
            logits = json.loads((run.path / TEACHER_LOGITS_RECORD).read_text())
            rows.append(
                {
                    "cost": f"teacher {name}: logits",
                    "kind": "logits",
                    "seconds": float(logits["seconds"]),
                }
            )
        except (OSError, ValueError, KeyError, TypeError):
            pass
    for path in sorted((root / "scores").glob("*.parquet")):
        try:
            metadata = Scores.load(path).metadata
        except DataPruningError:
            continue
        seconds = metadata.get("seconds") or 0.0
        if not _is_number(seconds):
            raise DataPruningError(
                f"scores file {str(path)!r}: seconds is {seconds!r}, not a number; rescore it "
                "or move it out of the experiment"
            )
        rows.append(_scoring_row(path, metadata, seconds))
    return rows


def _scoring_row(path: Path, metadata: dict[str, Any], seconds: float) -> dict[str, Any]:
    """A scores file's shared cost: its scoring models' seconds, or (``source: runs``) what
    the full-data runs spent recording it, of which ``in_training`` seconds already count in
    their training time."""
    metric = metadata.get("metric", path.stem)
    runs = metadata.get("runs")
    if metadata.get("source") != "runs" or not isinstance(runs, list):
        return {"cost": f"scoring: {metric}", "kind": "scoring", "seconds": seconds}
    names = ", ".join(Path(str(run.get("dir", "?"))).name for run in runs if isinstance(run, dict))
    in_training = metadata.get("seconds_in_training") or 0.0
    return {
        "cost": f"scoring: {metric}, recorded by {names}",
        "kind": "scoring",
        "seconds": seconds,
        "in_training": float(in_training) if _is_number(in_training) else 0.0,
    }
