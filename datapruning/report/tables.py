"""Time-to-accuracy reports: which recipe reaches a target accuracy soonest, end to end.

Why this shape (issue 16): on the quickstart (MNIST-1D, 4,000 examples) the best
distilled student reached the target in 0.57 s against full data's 1.07 s, yet end
to end, with its teacher and its scoring counted, every pruned recipe was about 4x
slower than full data. Whether pruning pays therefore depends on how the teacher's
cost is counted and on the dataset's size, so the report shows both.

- **Time to target** is read from each run's ``metrics.jsonl``, so targets can be
  chosen after the runs finished. Evaluations fall on each run's own epoch grid (a
  30% subset is checked 3x as often as full data), so the crossing is interpolated
  linearly between the last evaluation below the target and the first at or above
  it; a run whose first evaluation already reached it gets that evaluation's time.
  Without this, full data's crossing could be late by up to one of its epochs
  (about 10% of its time to target at 20,000 examples, issue 16).
- **Targets**: full data's mean final accuracy minus ``target_drop``, plus any of
  ``targets``: absolute (``0.9``) or relative to full data (``"0.99r"``). Full data
  means the runs of recipe ``full`` only; ``full-short`` is a recipe like the others.
- **Teacher cost three ways**: charged to each KD student (as if each had trained
  its own teacher), once per sweep (the teacher's training and logits divided among
  the KD students of the experiment that distil from it) and zero (an existing model
  as teacher: only its logits, still shared). Scoring is charged in full to every
  student that read the scores.
- **Experiments**: runs are grouped by their parent directory, so a root holds one
  experiment or a study of several (e.g. one per dataset size); a study gets a
  summary table, the smallest training-set size at which pruning pays and a
  speed-up-vs-size plot.

Outputs: ``report.md``, a self-contained ``report.html`` (plots embedded, tables
sortable by clicking a header, the machine, library versions and command) and the
PNGs, all written atomically and only once every input was read.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from datapruning._io import atomic_write, write_text
from datapruning.errors import DataPruningError
from datapruning.train.loop import METRICS_NAME
from datapruning.train.summary import SUMMARY_NAME, check_summary_format

REPORT_NAME = "report.md"
HTML_NAME = "report.html"
# Written by datapruning.orchestration: a cell that failed for good, and a teacher's logits cost.
FAILURE_NAME = "failure.json"
TEACHER_LOGITS_RECORD = "teacher_logits.json"
PLOT_NAME = "tta.png"
PRUNING_PLOT_NAME = "pruning_curve.png"
BARS_PLOT_NAME = "time_to_target.png"
SIZE_PLOT_NAME = "speedup_vs_size.png"
FULL_RECIPE = "full"
# The three ways of charging a KD student for its teacher (see the module docstring).
TEACHER_VIEWS = ("student", "sweep", "zero")
_VIEW_TEXT = {
    "student": "teacher charged to each student",
    "sweep": "teacher counted once per sweep",
    "zero": "teacher already owned (logits only)",
}
# What a report reads from a run's summary.json and from each metrics.jsonl line.
_SUMMARY_KEYS = {
    "final_test_acc",
    "best_test_acc",
    "train_seconds",
    "eval_seconds",
    "kept_fraction",
}
_POINT_KEYS = {"train_seconds", "test_acc"}
_SPARSE_SUFFIX = re.compile(r"-sp[0-9.]+$")


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

    @property
    def overhead_seconds(self) -> float:
        """Work done before this run could start: scoring, and for KD the teacher's
        training and its logits on the training set (the per-student view)."""
        return self.scoring_seconds + self.teacher_cost_seconds

    @property
    def scoring_seconds(self) -> float:
        return float(self.summary.get("scoring_seconds") or 0)

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


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """An accuracy to reach; ``name`` says where it came from."""

    name: str
    accuracy: float
    spec: str  # as given: "drop 0.01", "0.9", "0.99r"


def parse_targets(targets: Sequence[float | str]) -> list[tuple[float, bool, str]]:
    """(value, relative, spec) of each extra target: 0.9 absolute, "0.99r" relative."""
    from datapruning.config import parse_target

    parsed = []
    for target in targets:
        spec = str(target).strip()
        try:
            given: float | str = spec if spec.endswith("r") else float(spec)
        except ValueError:
            raise DataPruningError(
                f"target {spec!r} must be an accuracy like 0.9 or a share of full data's "
                "accuracy like 0.99r"
            ) from None
        try:
            value, relative = parse_target(given)
        except ValueError as exc:
            raise DataPruningError(str(exc)) from None
        parsed.append((value, relative, spec))
    return parsed


def resolve_targets(
    full_acc: float, target_drop: float, extra: Sequence[tuple[float, bool, str]]
) -> list[Target]:
    """The experiment's targets: full data's mean final accuracy minus the drop, then extras."""
    drop = f"{target_drop * 100:g} point{'' if target_drop == 0.01 else 's'}"
    targets = [
        Target(
            f"full data's {full_acc:.1%} minus {drop}",
            full_acc - target_drop,
            f"drop {target_drop:g}",
        )
    ]
    for value, relative, spec in extra:
        if relative:
            targets.append(
                Target(f"{value:g} × full data's {full_acc:.1%}", value * full_acc, spec)
            )
        else:
            targets.append(Target("absolute", value, spec))
    return targets


# ---------------------------------------------------------------- tables


def _teacher_shares(runs: Sequence[RunRecord]) -> dict[tuple[Path, str | None], int]:
    """How many KD students of each experiment distil from each teacher."""
    counts: dict[tuple[Path, str | None], int] = {}
    for run in runs:
        if run.kd:
            key = (run.experiment, run.teacher)
            counts[key] = counts.get(key, 0) + 1
    return counts


def _overheads(run: RunRecord, students: int) -> dict[str, float]:
    """Seconds added to the run's time to target under each teacher view."""
    students = max(students, 1)
    return {
        "student": run.scoring_seconds + run.teacher_cost_seconds,
        "sweep": run.scoring_seconds + run.teacher_cost_seconds / students,
        "zero": run.scoring_seconds + run.teacher_logits_seconds / students,
    }


def _kept(run: RunRecord) -> float:
    return round(float(run.summary["kept_fraction"]), 6)


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def _std(values: Any) -> float:
    values = list(values)
    return statistics.stdev(values) if len(values) > 1 else 0.0


def tta_table(
    runs: list[RunRecord], target_drop: float = 0.01, target: float | None = None
) -> tuple[pd.DataFrame, float]:
    """One row per (recipe, kept fraction, KD, budget) and the target accuracy used.

    ``runs`` are one experiment's. The target is ``target`` if given, else full
    data's mean final accuracy minus ``target_drop``. Times are medians over the
    seeds (NaN unless every seed reached the target); speed-ups divide full data's
    median time by the row's.
    """
    full = [run for run in runs if run.recipe == FULL_RECIPE]
    if not full:
        raise DataPruningError(
            f"no full-data run (recipe {FULL_RECIPE!r}) among the runs; it sets the target accuracy"
        )
    if target is None:
        target = _mean(run.summary["final_test_acc"] for run in full) - target_drop
    shares = _teacher_shares(runs)
    groups: dict[tuple[str, float, bool, str], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault((run.recipe, _kept(run), run.kd, run.budget), []).append(run)

    rows = []
    for (recipe, kept, kd, budget), members in groups.items():
        times = [run.seconds_to(target) for run in members]
        reached = [t for t in times if t is not None]
        all_reached = len(reached) == len(members)
        overheads = [
            _overheads(run, shares.get((run.experiment, run.teacher), 1)) for run in members
        ]
        sparsities = [run.sparsity for run in members if run.sparsity is not None]
        row: dict[str, Any] = {
            "recipe": recipe,
            "kept": kept,
            "kd": kd,
            # cached: the teacher's logits once per example; online: run on every
            # augmented batch (summary.json kd_teacher).
            "kd_teacher": "/".join(
                sorted({str(run.summary.get("kd_teacher") or "cached") for run in members})
            )
            if kd
            else "",
            "budget": budget,
            "runs": len(members),
            "final_acc": _mean(run.summary["final_test_acc"] for run in members),
            "final_std": _std(run.summary["final_test_acc"] for run in members),
            "best_acc": _mean(run.summary["best_test_acc"] for run in members),
            "train_s": _mean(run.summary["train_seconds"] for run in members),
            "eval_s": _mean(run.summary["eval_seconds"] for run in members),
            "sparsity": _mean(sparsities) if sparsities else math.nan,
            "reached": len(reached),
            # Only a recipe that reached the target in every run gets a time.
            "tta_s": statistics.median(reached) if all_reached else math.nan,
            "tta_min": min(reached) if reached else math.nan,
            "tta_max": max(reached) if reached else math.nan,
            "scoring_s": _mean(run.scoring_seconds for run in members),
            "teacher_s": _mean(run.teacher_cost_seconds for run in members),
            "overhead_s": _mean(o["student"] for o in overheads),
        }
        for view in TEACHER_VIEWS:
            e2e = [t + o[view] for t, o in zip(times, overheads, strict=True) if t is not None]
            row[f"e2e_{view}_s"] = statistics.median(e2e) if all_reached else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    table["e2e_tta_s"] = table["e2e_student_s"]
    is_full = (table["recipe"] == FULL_RECIPE) & (table["budget"] == "epochs")
    full_rows = table[is_full] if is_full.any() else table[table["recipe"] == FULL_RECIPE]
    full_tta = full_rows["tta_s"].iloc[0]
    table["speedup"] = full_tta / table["tta_s"]
    for view in TEACHER_VIEWS:
        table[f"e2e_{view}_speedup"] = full_tta / table[f"e2e_{view}_s"]
    table["e2e_speedup"] = table["e2e_student_speedup"]
    table["order"] = table["recipe"] != FULL_RECIPE
    table = table.sort_values(
        ["order", "kept", "recipe", "kd", "budget"], ascending=[True, False, True, True, True]
    )
    return table.drop(columns="order").reset_index(drop=True), target


def recipe_name(row: Any) -> str:
    """``el2n-hard 30% + KD``; full data at 100% is ``full data``."""
    if row["recipe"] == FULL_RECIPE and row["kept"] == 1.0 and row["budget"] == "epochs":
        return "full data"
    kept = "" if row["kept"] == 1.0 else f" {row['kept']:.0%}"
    kd = " + KD" if row["kd"] else ""
    budget = {"epochs": "", "steps": ", equal steps"}.get(row["budget"], f", {row['budget']}")
    return f"{row['recipe']}{kept}{kd}{budget}"


def _full_row(table: pd.DataFrame) -> pd.Series:
    full = table[(table["recipe"] == FULL_RECIPE) & (table["budget"] == "epochs")]
    return (full if not full.empty else table[table["recipe"] == FULL_RECIPE]).iloc[0]


def best_row(table: pd.DataFrame, view: str = "sweep") -> pd.Series | None:
    """The row with the shortest median end-to-end time (every seed reached), full data included."""
    reached = table[table[f"e2e_{view}_s"].notna()]
    if reached.empty:
        return None
    # Full data wins ties: a recipe must be strictly faster to be worth it.
    order = reached.assign(_full=reached.index != _full_row(table).name)
    return order.sort_values([f"e2e_{view}_s", "_full"]).iloc[0].drop("_full")


def verdict(
    table: pd.DataFrame,
    target: float,
    dataset: str = "this data",
    num_train: int | None = None,
) -> str:
    """The answer line: which recipe reaches ``target`` soonest end to end, teacher counted
    once per sweep, or that none beats full data; then the fastest student alone."""
    where = f"{dataset} ({num_train:,} training examples)" if num_train else dataset
    full = _full_row(table)
    best = best_row(table, "sweep")
    if best is None:
        return f"No recipe reached {target:.1%} on {where} in every run, full data included."
    view = _VIEW_TEXT["sweep"]
    if math.isnan(full["tta_s"]):
        answer = (
            f"To reach {target:.1%} soonest on {where}, use **{recipe_name(best)}** "
            f"({best['e2e_sweep_s']:.2f} s end to end, {view}); full-data training did not "
            "reach it in every run."
        )
    elif best.name == full.name:
        others = table[(table.index != full.name) & table["e2e_sweep_s"].notna()]
        answer = (
            f"To reach {target:.1%} soonest on {where}, no recipe beats full-data training "
            f"end to end ({full['tta_s']:.2f} s, {view})"
        )
        if not others.empty:
            runner = others.loc[others["e2e_sweep_s"].idxmin()]
            answer += (
                f"; the fastest other, {recipe_name(runner)}, takes "
                f"{runner['e2e_sweep_s']:.2f} s ({runner['e2e_sweep_speedup']:.2f}× full data)"
            )
        answer += "."
    else:
        answer = (
            f"To reach {target:.1%} soonest on {where}, use **{recipe_name(best)}** "
            f"({best['e2e_sweep_s']:.2f} s end to end, {best['e2e_sweep_speedup']:.2f}× full "
            f"data's {full['tta_s']:.2f} s), {view}."
        )
    students = table[(table.index != full.name) & table["tta_s"].notna()]
    if students.empty:
        return answer + " No other recipe reached it in every run."
    fastest = students.loc[students["tta_s"].idxmin()]
    alone = f"{fastest['tta_s']:.2f} s"
    if not math.isnan(fastest["speedup"]):
        alone += f", {fastest['speedup']:.2f}×"
    return answer + f" Student training alone, the fastest is {recipe_name(fastest)} ({alone})."


# ---------------------------------------------------------------- experiments


@dataclass
class Section:
    """One target's table of one experiment."""

    target: Target
    table: pd.DataFrame
    answer: str


@dataclass
class Experiment:
    path: Path
    name: str
    runs: list[RunRecord]
    failures: list[dict[str, Any]] = field(default_factory=list)
    shared: list[dict[str, Any]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    note: str = ""

    @property
    def full(self) -> list[RunRecord]:
        return [run for run in self.runs if run.recipe == FULL_RECIPE]

    @property
    def dataset(self) -> str:
        dataset = self.runs[0].summary.get("dataset") or {}
        return str(dataset.get("name", "?")) if isinstance(dataset, dict) else "?"

    @property
    def num_train(self) -> int | None:
        for run in self.runs:
            dataset = run.summary.get("dataset")
            if isinstance(dataset, dict) and _is_number(dataset.get("num_train")):
                return int(dataset["num_train"])
        sizes = [run.summary.get("num_train_examples") for run in self.full]
        return int(sizes[0]) if sizes and _is_number(sizes[0]) else None

    def file_name(self, name: str) -> str:
        """``tta.png`` for the root's own experiment, ``tta-<experiment>.png`` for a study's."""
        if not self.name:
            return name
        stem, suffix = name.rsplit(".", 1)
        return f"{stem}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', self.name)}.{suffix}"


def group_experiments(root: Path, runs: list[RunRecord]) -> list[Experiment]:
    by_path: dict[Path, list[RunRecord]] = {}
    for run in runs:
        by_path.setdefault(run.experiment, []).append(run)
    experiments = []
    for path, members in by_path.items():
        name = "" if path == root else path.relative_to(root).as_posix()
        experiments.append(Experiment(path, name, members))
    experiments.sort(key=lambda e: (e.dataset, e.num_train or 0, e.name))
    return experiments


def shared_costs(root: str | os.PathLike[str], runs: list[RunRecord]) -> list[dict[str, Any]]:
    """The experiment's one-off costs: each teacher's training and logits, each scoring."""
    from datapruning.scores import Scores

    root = Path(root)
    rows: list[dict[str, Any]] = []
    for run in runs:
        if run.recipe != FULL_RECIPE:
            continue
        name = run.path.name
        rows.append({"cost": f"teacher {name}: training", "seconds": run.summary["train_seconds"]})
        try:
            logits = json.loads((run.path / TEACHER_LOGITS_RECORD).read_text())
            rows.append({"cost": f"teacher {name}: logits", "seconds": float(logits["seconds"])})
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
        rows.append({"cost": f"scoring: {metadata.get('metric', path.stem)}", "seconds": seconds})
    return rows


def time_table(experiments: Sequence[Experiment]) -> pd.DataFrame:
    """Where each experiment's compute went: scoring, teachers, students, evaluation.

    Seconds summed over every finished run and scores file of the experiment (the work
    done once, however many students share it), evaluation of every run included.
    """
    rows = []
    for experiment in experiments:
        shared = experiment.shared
        scoring = sum(r["seconds"] for r in shared if str(r["cost"]).startswith("scoring"))
        logits = sum(r["seconds"] for r in shared if str(r["cost"]).endswith(": logits"))
        teachers = sum(float(run.summary["train_seconds"]) for run in experiment.full)
        students = sum(
            float(run.summary["train_seconds"])
            for run in experiment.runs
            if run.recipe != FULL_RECIPE
        )
        evaluation = sum(float(run.summary["eval_seconds"]) for run in experiment.runs)
        rows.append(
            {
                "experiment": experiment.name or experiment.dataset,
                "train size": _size(experiment.num_train),
                "runs": len(experiment.runs),
                "scoring s": scoring,
                "teachers s": teachers,
                "teacher logits s": logits,
                "students s": students,
                "evaluation s": evaluation,
                "total s": scoring + teachers + logits + students + evaluation,
            }
        )
    frame = pd.DataFrame(rows)
    for column in [c for c in frame.columns if c.endswith(" s")]:
        frame[column] = frame[column].map(lambda value: f"{value:.1f}")
    return frame


_TIME_TITLE = "Where the time goes"
_TIME_NOTE = (
    "Seconds of compute summed over every run and scores file, each shared cost once "
    "(teachers, their logits, each metric's scoring), training and evaluation apart."
)


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


def build_experiments(
    root: Path, target_drop: float, targets: Sequence[float | str]
) -> tuple[list[Experiment], list[dict[str, Any]]]:
    """Every experiment under ``root`` with its tables; and failures of no known experiment."""
    extra = parse_targets(targets)
    runs = find_runs(root)
    experiments = group_experiments(root, runs)
    if not any(experiment.full for experiment in experiments):
        raise DataPruningError(
            f"no full-data run (recipe {FULL_RECIPE!r}) under {str(root)!r}; "
            "it sets the target accuracy"
        )
    by_path = {experiment.path: experiment for experiment in experiments}
    orphans = []
    for failure in find_failures(root):
        owner = by_path.get(failure.pop("_path").parent.parent)
        (owner.failures if owner is not None else orphans).append(failure)
    for experiment in experiments:
        experiment.shared = shared_costs(experiment.path, experiment.runs)
        if not experiment.full:
            experiment.note = (
                f"No full-data run (recipe {FULL_RECIPE!r}) in this experiment, so it has no "
                "target; its runs are left out of the tables."
            )
            continue
        full_acc = _mean(run.summary["final_test_acc"] for run in experiment.full)
        for target in resolve_targets(full_acc, target_drop, extra):
            table, _ = tta_table(experiment.runs, target=target.accuracy)
            answer = verdict(table, target.accuracy, experiment.dataset, experiment.num_train)
            experiment.sections.append(Section(target, table, answer))
    return experiments, orphans


def study_table(experiments: Sequence[Experiment], index: int) -> pd.DataFrame:
    """One row per experiment for the ``index``-th target: its best recipe, teacher once
    per sweep, and that recipe's end-to-end time and speed-up under each teacher view."""
    rows = []
    for experiment in experiments:
        if len(experiment.sections) <= index:
            continue
        section = experiment.sections[index]
        full = _full_row(section.table)
        best = best_row(section.table, "sweep")
        row: dict[str, Any] = {
            "experiment": experiment.name or ".",
            "dataset": experiment.dataset,
            "num_train": experiment.num_train,
            "target": section.target.accuracy,
            "full_tta_s": full["tta_s"],
            "best": recipe_name(best) if best is not None else "none reached",
            "best_is_full": best is not None and best.name == full.name,
        }
        for view in TEACHER_VIEWS:
            row[f"e2e_{view}_s"] = best[f"e2e_{view}_s"] if best is not None else math.nan
            row[f"e2e_{view}_speedup"] = (
                best[f"e2e_{view}_speedup"] if best is not None else math.nan
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _size(value: Any) -> str:
    return "?" if value is None or pd.isna(value) else f"{int(value):,}"


def _target_spec(experiments: Sequence[Experiment], index: int) -> str:
    return next(e.sections[index].target.spec for e in experiments if len(e.sections) > index)


def smallest_size_sentence(summary: pd.DataFrame) -> str:
    """The smallest training-set size at which the best recipe beats full data end to end."""
    pays = summary[~summary["best_is_full"] & (summary["e2e_sweep_speedup"] > 1)]
    if pays.empty:
        return (
            "At no training-set size here does any recipe beat full-data training end to end "
            "with the teacher counted once per sweep."
        )
    smallest = pays.sort_values("num_train", na_position="last").iloc[0]
    size = _size(smallest["num_train"])
    return (
        f"The smallest training-set size at which the best recipe beats full-data training end "
        f"to end, teacher counted once per sweep, is **{size} examples** ({smallest['dataset']}, "
        f"{smallest['best']}: {smallest['e2e_sweep_speedup']:.2f}× full data)."
    )


# ---------------------------------------------------------------- display


def _seconds(value: float) -> str:
    return "not reached" if math.isnan(value) else f"{value:.2f}"


def _speedup(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}×"


def _kd_cell(kd: bool, teacher: str) -> str:
    """``yes`` for KD from cached logits; ``yes (online)`` when the teacher ran on each
    augmented batch (its forward inside the student's training seconds)."""
    if not kd:
        return "no"
    return "yes" if teacher == "cached" else f"yes ({teacher})"


def _tta_cell(row: Any) -> str:
    if row.reached == 0:
        return "not reached"
    spread = f"{row.tta_min:.2f}–{row.tta_max:.2f}"
    if row.reached < row.runs:
        return f"not reached ({row.reached}/{row.runs} reached it: {spread})"
    return f"{row.tta_s:.2f}" + (f" [{spread}]" if row.runs > 1 else "")


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the report prints it: one string per cell."""
    rows = []
    for row in table.itertuples():
        rows.append(
            {
                "recipe": row.recipe,
                "kept": f"{row.kept:.0%}",
                "KD": _kd_cell(row.kd, row.kd_teacher),
                "runs": str(row.runs),
                "budget": row.budget,
                "sparsity": "" if math.isnan(row.sparsity) else f"{row.sparsity:.0%}",
                "final acc": f"{row.final_acc:.1%}"
                + (f" ± {row.final_std:.1%}" if row.runs > 1 else ""),
                "reached": f"{row.reached}/{row.runs}",
                "student s to target [min–max]": _tta_cell(row),
                "speed-up": _speedup(row.speedup),
                "scoring s": f"{row.scoring_s:.2f}",
                "teacher s": f"{row.teacher_s:.2f}",
                "end-to-end s, teacher per student": _seconds(row.e2e_student_s),
                "× (per student)": _speedup(row.e2e_student_speedup),
                "end-to-end s, teacher once per sweep": _seconds(row.e2e_sweep_s),
                "× (once per sweep)": _speedup(row.e2e_sweep_speedup),
                "end-to-end s, teacher owned": _seconds(row.e2e_zero_s),
                "× (owned)": _speedup(row.e2e_zero_speedup),
            }
        )
    return pd.DataFrame(rows)


def display_study(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for row in summary.itertuples():
        rows.append(
            {
                "experiment": row.experiment,
                "dataset": row.dataset,
                "train size": _size(row.num_train),
                "target": f"{row.target:.1%}",
                "full data s to target": _seconds(row.full_tta_s),
                "best recipe (teacher once per sweep)": row.best,
                **{
                    f"end-to-end s, {label}": _seconds(getattr(row, f"e2e_{view}_s"))
                    for view, label in zip(
                        TEACHER_VIEWS, ("per student", "once per sweep", "owned"), strict=True
                    )
                },
                **{
                    f"× ({label})": _speedup(getattr(row, f"e2e_{view}_speedup"))
                    for view, label in zip(
                        TEACHER_VIEWS, ("per student", "once per sweep", "owned"), strict=True
                    )
                },
            }
        )
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame, right: Iterable[str] = ()) -> list[str]:
    right = set(right)
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if c in right else "---" for c in frame.columns) + "|"
    body = [
        "| " + " | ".join(str(v).replace("|", "/") for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return [header, rule, *body]


_NUMERIC_COLUMNS = {
    "runs",
    "sparsity",
    "final acc",
    "reached",
    "speed-up",
    "scoring s",
    "teacher s",
}

_METHOD = (
    "Times are training wall-clock seconds, evaluation excluded. Each run's time to the target "
    "is interpolated linearly between the last evaluation below the target and the first at or "
    "above it (the first evaluation's own time if it already reached it), so runs evaluated on "
    "different step grids compare fairly; the table gives the median over seeds and "
    "[min–max]. A time, and so a speed-up, needs every seed to reach the target. *Student* "
    "counts the run alone; *end-to-end* adds the scoring (in full to every student that read "
    "scores) and, for KD, the teacher's training and logits three ways: charged to each student, "
    "once per sweep (shared among the experiment's KD students of that teacher), or owned (an "
    "existing model: only its logits, shared). Speed-ups divide full data's median time to the "
    "target by the recipe's. KD *yes (online)*: with augmentation the teacher ran on every "
    "augmented batch, inside the student's seconds; plain *yes* read cached logits. The target "
    "comes from the recipe `full` only; `full-short` is full data on a shortened schedule, a "
    "recipe like the others. Budget *steps*: the subset run was given as many optimizer steps "
    "as full data."
)


def _context(experiment: Experiment) -> str:
    full = experiment.full[0].summary if experiment.full else experiment.runs[0].summary
    dataset = full.get("dataset") or {}
    fingerprint = dataset.get("fingerprint", "?") if isinstance(dataset, dict) else "?"
    size = f"{experiment.num_train:,}" if experiment.num_train else "?"
    return (
        f"Dataset `{experiment.dataset}` (fingerprint `{fingerprint}`, {size} training "
        f"examples), model `{full.get('model', '?')}`, {full.get('epochs', '?')} "
        f"epoch{'' if full.get('epochs') == 1 else 's'} per full-data run."
    )


def render_experiment(experiment: Experiment, level: int = 2) -> list[str]:
    """The markdown of one experiment: answer lines, one table per target, costs, failures."""
    head = "#" * level
    lines = [f"{head} {experiment.name or 'Experiment'}", "", _context(experiment), ""]
    if experiment.note:
        lines += [experiment.note, ""]
    lines += [f"- {section.answer}" for section in experiment.sections]
    if experiment.sections:
        lines.append("")
    for section in experiment.sections:
        lines += [
            f"{head}# Target {section.target.accuracy:.1%} ({section.target.name})",
            "",
            *markdown_table(
                display_table(section.table),
                right=[
                    c
                    for c in display_table(section.table).columns
                    if c not in {"recipe", "KD", "budget"}
                ],
            ),
            "",
        ]
    if experiment.shared:
        lines += [
            "Shared costs, paid once for the whole experiment (each student above is "
            "charged the ones it used):",
            "",
            "| cost | seconds |",
            "|---|---:|",
            *(f"| {row['cost']} | {row['seconds']:.2f} |" for row in experiment.shared),
            "",
        ]
    if experiment.failures:
        lines += [
            f"Failed runs ({len(experiment.failures)}; the tables leave them out):",
            "",
            "| run | error |",
            "|---|---|",
            *(
                f"| {row['run']} | {str(row.get('error', '?')).replace('|', '/')} |"
                for row in experiment.failures
            ),
            "",
        ]
    return lines


def render_markdown(
    experiments: Sequence[Experiment],
    title: str,
    plots: dict[str, str] | None = None,
    orphans: Sequence[dict[str, Any]] = (),
) -> str:
    """report.md: answer lines first, then the study summary, then each experiment.

    ``plots`` maps a PNG's file name to its caption; each experiment's plots follow its
    tables and the study's plots the summary.
    """
    plots = dict(plots or {})
    lines = [f"# Time to accuracy: {title}", ""]
    answers = [f"- {e.sections[0].answer}" for e in experiments if e.sections]
    lines += [*answers, ""] if answers else []
    lines += [_METHOD, ""]
    study = [e for e in experiments if e.sections]
    if len(experiments) > 1 and study:
        for index in range(max(len(e.sections) for e in study)):
            summary = study_table(study, index)
            if summary.empty:
                continue
            lines += [
                f"## Study summary, target {_target_spec(study, index)}",
                "",
                *markdown_table(display_study(summary)),
                "",
                smallest_size_sentence(summary),
                "",
            ]
        lines += _plot_lines(plots, SIZE_PLOT_NAME)
    if experiments:
        times = time_table(experiments)
        lines += [f"## {_TIME_TITLE}", "", _TIME_NOTE, ""]
        lines += [*markdown_table(times, right=[c for c in times.columns if c != "experiment"])]
        lines += [""]
    for experiment in experiments:
        lines += render_experiment(experiment, level=2)
        for name in (PLOT_NAME, PRUNING_PLOT_NAME, BARS_PLOT_NAME):
            lines += _plot_lines(plots, experiment.file_name(name))
    if orphans:
        lines += [
            f"Failed runs outside any experiment ({len(orphans)}):",
            "",
            "| run | error |",
            "|---|---|",
            *(
                f"| {row['run']} | {str(row.get('error', '?')).replace('|', '/')} |"
                for row in orphans
            ),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _plot_lines(plots: dict[str, str], name: str) -> list[str]:
    return [f"![{plots[name]}]({name})", ""] if name in plots else []


# ---------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    return buffer.getvalue()


def _colours(names: Iterable[str]) -> dict[str, Any]:
    names = sorted(set(names))
    # tab10 is the most distinct; past ten recipes, tab20 keeps every colour unique.
    cmap = _pyplot().get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _family(recipe: str) -> str:
    """A recipe's metric: the label without its sparsity suffix."""
    return _SPARSE_SUFFIX.sub("", recipe)


_LINE_STYLES = {
    (False, "epochs"): ("-", "no KD"),
    (True, "epochs"): ("--", "KD"),
    (False, "steps"): ("-.", "no KD, equal steps"),
    (True, "steps"): ((0, (1, 1)), "KD, equal steps"),
}


def _style(kd: bool, budget: str) -> Any:
    return _LINE_STYLES.get((kd, budget), _LINE_STYLES[kd, "epochs"])[0]


def _style_label(kd: bool, budget: str) -> str:
    if (kd, budget) in _LINE_STYLES:
        return _LINE_STYLES[kd, budget][1]
    return f"{'KD' if kd else 'no KD'}, budget {budget}"


def _legend(
    ax: Any, colours: dict[str, Any], styles: Iterable[tuple[bool, str]], **kw: Any
) -> None:
    """One entry per colour (recipe) and one per line style (KD, budget): a legend that
    stays short however many combinations the panel holds."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour, label=name) for name, colour in colours.items()]
    handles += [
        Line2D([], [], color="grey", linestyle=_style(*key), label=_style_label(*key))
        for key in sorted(set(styles), key=lambda key: (key[1] != "epochs", key))
    ]
    ax.legend(handles=handles, fontsize=7, **kw)


def plot_curves(runs: list[RunRecord], target: float) -> bytes:
    """Test accuracy against training seconds: one panel per kept fraction.

    Each panel shows the full-data runs in black and every recipe at that
    fraction in its own colour (all seeds; the line style says KD and budget);
    the target accuracy is a dotted grey line.
    """
    plt = _pyplot()
    full = [run for run in runs if run.recipe == FULL_RECIPE]
    fractions = sorted({_kept(run) for run in runs if run.recipe != FULL_RECIPE}, reverse=True)
    fractions = fractions or [1.0]
    colours = _colours(run.recipe for run in runs if run.recipe != FULL_RECIPE)
    fig, axes = plt.subplots(
        1, len(fractions), figsize=(4.2 * len(fractions), 3.8), sharey=True, squeeze=False
    )
    for ax, fraction in zip(axes[0], fractions, strict=True):
        members = [run for run in runs if run.recipe != FULL_RECIPE and _kept(run) == fraction]
        for run in full + members:
            ax.plot(
                [point["train_seconds"] for point in run.curve],
                [point["test_acc"] for point in run.curve],
                color="black" if run.recipe == FULL_RECIPE else colours[run.recipe],
                linestyle=_style(run.kd, run.budget),
                linewidth=1.2,
            )
        ax.axhline(target, linestyle=":", color="grey", linewidth=1)
        ax.set_title(f"kept {fraction:.0%}")
        ax.set_xlabel("training seconds (evaluation excluded)")
        ax.set_ylim(max(0.0, target - 0.3), 1.0)
        ax.grid(alpha=0.3)
        shown = {"full data": "black"} if full else {}
        shown |= {name: colours[name] for name in sorted({run.recipe for run in members})}
        _legend(ax, shown, [(run.kd, run.budget) for run in full + members], loc="lower right")
    axes[0][0].set_ylabel("test accuracy")
    fig.tight_layout()
    return _png(fig)


def plot_pruning_curve(runs: list[RunRecord]) -> bytes:
    """Final test accuracy (mean ± std over seeds) against kept fraction, one line per
    recipe (metric), dashed with KD, one panel per budget; full data a black square at
    1.0 and a dotted line across."""
    plt = _pyplot()
    budgets = sorted({run.budget for run in runs})
    full = [run.summary["final_test_acc"] for run in runs if run.recipe == FULL_RECIPE]
    others = [run for run in runs if run.recipe != FULL_RECIPE]
    colours = _colours(run.recipe for run in others)
    fig, axes = plt.subplots(
        1, len(budgets), figsize=(5.5 * len(budgets), 4.0), sharey=True, squeeze=False
    )
    for ax, budget in zip(axes[0], budgets, strict=True):
        lines: dict[tuple[str, bool], dict[float, list[float]]] = {}
        for run in others:
            if run.budget == budget:
                points = lines.setdefault((run.recipe, run.kd), {})
                points.setdefault(_kept(run), []).append(run.summary["final_test_acc"])
        for (recipe, kd), points in sorted(lines.items()):
            xs = sorted(points)
            ax.errorbar(
                xs,
                [_mean(points[x]) for x in xs],
                yerr=[_std(points[x]) for x in xs],
                color=colours[recipe],
                linestyle=_style(kd, budget),
                marker="o",
                markersize=4,
                capsize=3,
                linewidth=1.2,
            )
        if full:
            ax.axhline(_mean(full), color="black", linestyle=":", linewidth=1)
            ax.errorbar(
                [1.0],
                [_mean(full)],
                yerr=[_std(full)],
                color="black",
                marker="s",
                capsize=3,
            )
        ax.set_title(f"budget: {budget}")
        ax.set_xlabel("kept fraction of the training set")
        ax.set_xlim(0, 1.05)
        ax.grid(alpha=0.3)
        shown = {"full data": "black"} if full else {}
        shown |= {recipe: colours[recipe] for recipe, _ in sorted(lines)}
        _legend(ax, shown, [(kd, budget) for _, kd in lines], loc="lower right", ncol=2)
    axes[0][0].set_ylabel("final test accuracy")
    fig.tight_layout()
    return _png(fig)


def plot_time_to_target(section: Section) -> bytes:
    """Horizontal bars: each row's median student time to the target (min–max error bars)
    and, outlined, its end-to-end time with the teacher once per sweep; rows that did not
    reach it in every run are marked."""
    plt = _pyplot()
    table = section.table
    names = [recipe_name(row) for _, row in table.iterrows()]
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.32 * len(table)))
    ys = list(range(len(table)))[::-1]
    finite = [v for v in [*table["e2e_sweep_s"], *table["tta_max"]] if not math.isnan(v)]
    right = max(finite) if finite else 1.0
    for y, (_, row) in zip(ys, table.iterrows(), strict=True):
        colour = (
            "black" if row["recipe"] == FULL_RECIPE else ("tab:purple" if row["kd"] else "tab:blue")
        )
        if math.isnan(row["tta_s"]):
            label = (
                "not reached"
                if row["reached"] == 0
                else f"not reached ({row['reached']}/{row['runs']})"
            )
            ax.text(0.01 * right, y, label, va="center", fontsize=7, color="tab:red")
            continue
        ax.barh(y, row["e2e_sweep_s"], color="none", edgecolor=colour, linewidth=1, height=0.7)
        ax.barh(
            y,
            row["tta_s"],
            xerr=[[row["tta_s"] - row["tta_min"]], [row["tta_max"] - row["tta_s"]]],
            color=colour,
            alpha=0.6,
            height=0.7,
            capsize=2,
        )
    ax.set_yticks(ys, names, fontsize=7)
    ax.set_xlim(0, right * 1.1)
    ax.set_xlabel("seconds to target: filled = student (median, min–max), outline = end to end")
    ax.set_title(
        f"time to {section.target.accuracy:.1%} (teacher counted once per sweep)", fontsize=9
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_speedup_vs_size(experiments: Sequence[Experiment]) -> bytes:
    """End-to-end speed-up (teacher once per sweep) against training-set size, log-log:
    the best recipe per experiment in black, the best of each metric in colour, one
    marker per dataset, a dotted line at 1×."""
    plt = _pyplot()
    markers = dict(zip(sorted({e.dataset for e in experiments}), "osD^vP*X", strict=False))
    families: dict[str, dict[str, list[tuple[int, float]]]] = {}
    best: dict[str, list[tuple[int, float]]] = {}
    for experiment in experiments:
        if not experiment.sections or not experiment.num_train:
            continue
        table = experiment.sections[0].table
        size = experiment.num_train
        choice = best_row(table, "sweep")
        if choice is not None and not math.isnan(choice["e2e_sweep_speedup"]):
            best.setdefault(experiment.dataset, []).append((size, choice["e2e_sweep_speedup"]))
        for family, rows in table.groupby(table["recipe"].map(_family)):
            if family == FULL_RECIPE:
                continue
            value = rows["e2e_sweep_speedup"].max()
            if not math.isnan(value):
                families.setdefault(family, {}).setdefault(experiment.dataset, []).append(
                    (size, value)
                )
    colours = _colours(families)
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for family, per_dataset in sorted(families.items()):
        for dataset, points in per_dataset.items():
            points.sort()
            ax.plot(
                *zip(*points, strict=True),
                color=colours[family],
                marker=markers[dataset],
                linewidth=1,
                markersize=5,
                alpha=0.8,
            )
    for dataset, points in best.items():
        points.sort()
        ax.plot(
            *zip(*points, strict=True),
            color="black",
            marker=markers[dataset],
            linewidth=2.2,
            markersize=7,
        )
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}×"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: f"{y:g}×"))
    ax.set_xlabel("training-set size (examples)")
    ax.set_ylabel("end-to-end speed-up vs full data")
    ax.set_title("time to target, teacher counted once per sweep", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="black", linewidth=2.2, label="best recipe")]
    handles += [Line2D([], [], color=colours[f], label=f) for f in sorted(families)][:10]
    handles += [
        Line2D([], [], color="grey", marker=m, linestyle="", label=d) for d, m in markers.items()
    ]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------- html

_SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.style.cursor = "pointer";
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.dataset.order !== "asc";
    th.parentNode.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = asc ? "asc" : "desc";
    var key = function (row) {
      var text = row.children[col].textContent.trim(), n = parseFloat(text.replace(/,/g, ""));
      return isNaN(n) ? [1, text] : [0, n];
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x[0] !== y[0]) return x[0] - y[0];  // numbers first, words ("not reached") last
      var c = x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0;
      return asc ? c : -c;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1400px; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f0f0f0; } th[data-order=asc]::after { content: " ▲"; }
th[data-order=desc]::after { content: " ▼"; }
td:first-child { text-align: left; } img { max-width: 100%; display: block; margin: 1em 0; }
.answer { font-size: 1.1em; background: #eef6ee; padding: 0.5em 1em; border-left: 4px solid #4a4; }
.meta { font-size: 12px; color: #555; }
"""


def environment(command: str | None = None) -> dict[str, str]:
    """The machine, library versions and command behind a report."""
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "python": platform.python_version(),
    }
    for package in ("torch", "numpy", "pandas", "matplotlib"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    from datapruning import __version__

    info["datapruning"] = __version__
    info["command"] = command if command is not None else shlex.join(sys.argv)
    return info


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, classes="sortable", border=0, escape=True)


def _md_inline(text: str) -> str:
    """Bold and code spans of an answer line, as HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"\*(.+?)\*", r"<i>\1</i>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def render_html(
    experiments: Sequence[Experiment],
    title: str,
    pngs: dict[str, bytes],
    captions: dict[str, str],
    info: dict[str, str],
    orphans: Sequence[dict[str, Any]] = (),
) -> str:
    """report.html: self-contained (plots as base64 images, tables sortable by a few
    lines of inline script, no external resource)."""

    def image(name: str) -> str:
        if name not in pngs:
            return ""
        data = base64.b64encode(pngs[name]).decode("ascii")
        caption = html.escape(captions.get(name, name))
        return (
            f'<img alt="{caption}" title="{html.escape(name)}" src="data:image/png;base64,{data}">'
        )

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Time to accuracy: {html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Time to accuracy: {html.escape(title)}</h1>",
    ]
    for experiment in experiments:
        if experiment.sections:
            parts.append(f'<p class="answer">{_md_inline(experiment.sections[0].answer)}</p>')
    parts.append(f"<p>{_md_inline(_METHOD)}</p>")
    study = [e for e in experiments if e.sections]
    if len(experiments) > 1 and study:
        for index in range(max(len(e.sections) for e in study)):
            summary = study_table(study, index)
            if summary.empty:
                continue
            parts += [
                f"<h2>Study summary, target {html.escape(_target_spec(study, index))}</h2>",
                _html_table(display_study(summary)),
                f"<p>{_md_inline(smallest_size_sentence(summary))}</p>",
            ]
        parts.append(image(SIZE_PLOT_NAME))
    if experiments:
        parts += [
            f"<h2>{_TIME_TITLE}</h2>",
            f"<p>{html.escape(_TIME_NOTE)}</p>",
            _html_table(time_table(experiments)),
        ]
    for experiment in experiments:
        parts += [
            f"<h2>{html.escape(experiment.name or 'Experiment')}</h2>",
            f"<p>{_md_inline(_context(experiment))}</p>",
        ]
        if experiment.note:
            parts.append(f"<p>{html.escape(experiment.note)}</p>")
        parts.append(
            "<ul>"
            + "".join(f"<li>{_md_inline(s.answer)}</li>" for s in experiment.sections)
            + "</ul>"
        )
        for section in experiment.sections:
            parts += [
                f"<h3>Target {section.target.accuracy:.1%} ({html.escape(section.target.name)})</h3>",
                _html_table(display_table(section.table)),
            ]
        if experiment.shared:
            shared = pd.DataFrame(
                [{"cost": r["cost"], "seconds": f"{r['seconds']:.2f}"} for r in experiment.shared]
            )
            parts += ["<h3>Shared costs (paid once for the experiment)</h3>", _html_table(shared)]
        if experiment.failures:
            failed = pd.DataFrame(
                [{"run": r["run"], "error": str(r.get("error", "?"))} for r in experiment.failures]
            )
            parts += [f"<h3>Failed runs ({len(experiment.failures)})</h3>", _html_table(failed)]
        parts += [
            image(experiment.file_name(n)) for n in (PLOT_NAME, PRUNING_PLOT_NAME, BARS_PLOT_NAME)
        ]
    if orphans:
        failed = pd.DataFrame(
            [{"run": r["run"], "error": str(r.get("error", "?"))} for r in orphans]
        )
        parts += ["<h2>Failed runs outside any experiment</h2>", _html_table(failed)]
    meta = pd.DataFrame([{"": key, "value": value} for key, value in info.items()])
    parts += [
        "<h2>Machine, versions and command</h2>",
        f'<div class="meta">{_html_table(meta)}</div>',
    ]
    parts += [f"<script>{_SORT_SCRIPT}</script>", "</body></html>"]
    return "\n".join(part for part in parts if part) + "\n"


# ---------------------------------------------------------------- entry point


def write_report(
    root: str | os.PathLike[str],
    target_drop: float = 0.01,
    title: str | None = None,
    targets: Sequence[float | str] = (),
    command: str | None = None,
) -> tuple[Path, str]:
    """Write report.md, report.html and the PNGs for the runs under ``root``.

    ``targets``: extra target accuracies, absolute (0.9) or relative to full data
    ("0.99r"), each with its own tables; ``command``: what to record as the command
    that made the report (default ``sys.argv``). Returns report.md's path and text.
    """
    root = Path(root)
    if not 0 <= target_drop < 1:
        raise DataPruningError(f"target_drop {target_drop} must lie in [0, 1)")
    experiments, orphans = build_experiments(root, target_drop, targets)
    pngs: dict[str, bytes] = {}
    captions: dict[str, str] = {}
    for experiment in experiments:
        if not experiment.sections:
            continue
        where = f" ({experiment.name})" if experiment.name else ""
        first = experiment.sections[0]
        pngs[experiment.file_name(PLOT_NAME)] = plot_curves(experiment.runs, first.target.accuracy)
        captions[experiment.file_name(PLOT_NAME)] = f"test accuracy against training time{where}"
        pngs[experiment.file_name(PRUNING_PLOT_NAME)] = plot_pruning_curve(experiment.runs)
        captions[experiment.file_name(PRUNING_PLOT_NAME)] = (
            f"final accuracy against kept fraction{where}"
        )
        pngs[experiment.file_name(BARS_PLOT_NAME)] = plot_time_to_target(first)
        captions[experiment.file_name(BARS_PLOT_NAME)] = f"time to target per recipe{where}"
    if len(experiments) > 1 and any(e.sections for e in experiments):
        pngs[SIZE_PLOT_NAME] = plot_speedup_vs_size(experiments)
        captions[SIZE_PLOT_NAME] = "end-to-end speed-up against training-set size"
    title = title or root.resolve().name
    text = render_markdown(experiments, title, captions, orphans)
    page = render_html(experiments, title, pngs, captions, environment(command), orphans)
    # Written only once everything is read, so a bad run or scores file leaves no new file.
    for name, png in pngs.items():
        atomic_write(root / name, lambda tmp, png=png: tmp.write_bytes(png))
    write_text(root / HTML_NAME, page)
    path = write_text(root / REPORT_NAME, text)
    return path, text
