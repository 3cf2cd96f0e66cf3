"""The report's tables: targets, time to target per recipe, answer lines, study summary.

How the times are counted (interpolated crossing, shared costs three ways, full data
from the recipe ``full`` only) is set out in the package docstring (datapruning.report);
this module computes it with pandas and formats each table's cells as the report prints
them.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from datapruning.errors import DataPruningError
from datapruning.report.runs import (
    FULL_RECIPE,
    RunRecord,
    _is_number,
    find_failures,
    find_runs,
    shared_costs,
)

# The three ways of charging a student for the shared costs it used, its teacher and its
# scores (see the package docstring); the name stays from when only teachers were shared.
TEACHER_VIEWS = ("student", "sweep", "zero")
_VIEW_TEXT = {
    "student": "teacher and scores charged to each student",
    "sweep": "teacher and scores counted once per sweep",
    "zero": "teacher and scores already owned (logits only)",
}


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """An accuracy to reach; ``name`` says where it came from."""

    name: str
    accuracy: float
    spec: str  # as given: "drop 0.01", "0.9", "0.99r"


def parse_targets(targets: Sequence[float | str]) -> list[tuple[float, bool, str]]:
    """(value, relative, spec) of each extra target: 0.9 absolute, "0.99r" relative."""
    from datapruning.train.settings import parse_target

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


def _score_shares(runs: Sequence[RunRecord]) -> dict[tuple[Path, str | None], int]:
    """How many students of each experiment read each scores file."""
    counts: dict[tuple[Path, str | None], int] = {}
    for run in runs:
        if run.scores is not None:
            key = (run.experiment, run.scores)
            counts[key] = counts.get(key, 0) + 1
    return counts


def _overheads(run: RunRecord, students: int, readers: int = 1) -> dict[str, float]:
    """Seconds added to the run's time to target under each view of the shared costs:
    ``students`` distil from its teacher, ``readers`` read its scores (it among them).

    Per student: all of both. Once per sweep: each divided among its users. Owned: the
    teacher's logits still divided (they are computed on this data), the scores nothing
    (they exist: ``datapruning select`` reads them).
    """
    students, readers = max(students, 1), max(readers, 1)
    return {
        "student": run.scoring_seconds + run.teacher_cost_seconds,
        "sweep": run.scoring_seconds / readers + run.teacher_cost_seconds / students,
        "zero": run.teacher_logits_seconds / students,
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
    shares, readers = _teacher_shares(runs), _score_shares(runs)
    groups: dict[tuple[str, float, bool, str], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault((run.recipe, _kept(run), run.kd, run.budget), []).append(run)

    rows = []
    for (recipe, kept, kd, budget), members in groups.items():
        times = [run.seconds_to(target) for run in members]
        reached = [t for t in times if t is not None]
        all_reached = len(reached) == len(members)
        steps = [run.steps_to(target) for run in members]
        overheads = [
            _overheads(
                run,
                shares.get((run.experiment, run.teacher), 1),
                readers.get((run.experiment, run.scores), 1),
            )
            for run in members
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
            "tta_steps": statistics.median(steps)  # type: ignore[type-var]
            if all_reached and None not in steps
            else math.nan,
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
    table["steps_speedup"] = full_rows["tta_steps"].iloc[0] / table["tta_steps"]
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
    """The answer line: which recipe reaches ``target`` soonest end to end, teacher and
    scores counted once per sweep, or that none beats full data; then the fastest student
    alone."""
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


def time_table(experiments: Sequence[Experiment]) -> pd.DataFrame:
    """Where each experiment's compute went: scoring, teachers, students, evaluation.

    Seconds summed over every finished run and scores file of the experiment (the work
    done once, however many students share it), evaluation of every run included.
    """
    rows = []
    for experiment in experiments:
        shared = experiment.shared
        # Recorded scores: their bookkeeping inside the full-data runs' training is in
        # "teachers s" already, so only the rest (the EL2N passes) counts as scoring.
        scoring = sum(
            r["seconds"] - r.get("in_training", 0.0) for r in shared if r.get("kind") == "scoring"
        )
        logits = sum(r["seconds"] for r in shared if r.get("kind") == "logits")
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


def _training_seconds(run: RunRecord) -> float:
    """A run's training seconds less what recording scores added inside its clock (the
    bookkeeping of ``scoring.source: runs``): the same work as the run without it."""
    dynamics = run.summary.get("dynamics")
    inside = dynamics.get("seconds_in_training") if isinstance(dynamics, dict) else None
    return float(run.summary["train_seconds"]) - (float(inside) if _is_number(inside) else 0.0)


def repeat_table(experiments: Sequence[Experiment]) -> pd.DataFrame:
    """Full-data runs that did the same work in different experiments (same dataset,
    model, seed and steps): their training seconds side by side, and the slowest over the
    fastest. How far the machine's clock moved during the study: a speed-up smaller than
    this spread is within the machine's noise. Empty when no run repeats."""
    groups: dict[tuple[Any, ...], list[tuple[str, RunRecord]]] = {}
    for experiment in experiments:
        for run in experiment.full:
            dataset = run.summary.get("dataset")
            fingerprint = dataset.get("fingerprint") if isinstance(dataset, dict) else None
            steps = run.summary.get("steps")
            key = (fingerprint, run.summary.get("model"), run.summary.get("seed"), steps)
            if fingerprint is not None and _is_number(steps):
                groups.setdefault(key, []).append((experiment.name or experiment.dataset, run))
    rows = []
    for (_, model, seed, steps), members in groups.items():
        if len(members) < 2:
            continue
        seconds = [_training_seconds(run) for _, run in members]
        rows.append(
            {
                "runs": ", ".join(f"{name}/{run.path.name}" for name, run in members),
                "model": model,
                "seed": seed,
                "steps": steps,
                "training s": " / ".join(f"{value:.1f}" for value in seconds),
                "slowest / fastest": max(seconds) / min(seconds),
            }
        )
    return pd.DataFrame(rows)


def display_repeats(repeats: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """:func:`repeat_table` as the report prints it, and its sentence on the largest spread."""
    worst = repeats["slowest / fastest"].max()
    shown = repeats.assign(
        **{"slowest / fastest": repeats["slowest / fastest"].map("{:.2f}x".format)}
    )
    return shown, f"Largest spread between identical runs: {worst:.2f}x."


_REPEAT_TITLE = "How steady the clock was"
_REPEAT_NOTE = (
    "Full-data runs that did the same work in different experiments (same dataset, model, "
    "seed and steps), each trained in its own cell: their training seconds, less what "
    "recording scores added inside the clock. A speed-up within the largest ratio here is "
    "within the machine's noise; the steps columns do not move with it."
)


_TIME_TITLE = "Where the time goes"
_TIME_NOTE = (
    "Seconds of compute summed over every run and scores file, each shared cost once "
    "(teachers, their logits, each metric's scoring), training and evaluation apart. "
    "Scores the full-data runs recorded count their recording passes as scoring; the "
    "bookkeeping inside those runs' training is in their teachers' seconds."
)


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
    """One row per experiment for the ``index``-th target: its best recipe, shared costs once
    per sweep, and that recipe's end-to-end time and speed-up under each view."""
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
            "with the teacher and scores counted once per sweep."
        )
    smallest = pays.sort_values("num_train", na_position="last").iloc[0]
    size = _size(smallest["num_train"])
    return (
        f"The smallest training-set size at which the best recipe beats full-data training end "
        f"to end, teacher and scores counted once per sweep, is **{size} examples** "
        f"({smallest['dataset']}, "
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
                "student steps to target": "not reached"
                if math.isnan(row.tta_steps)
                else f"{row.tta_steps:,.0f}",
                "speed-up in steps": _speedup(row.steps_speedup),
                "scoring s": f"{row.scoring_s:.2f}",
                "teacher s": f"{row.teacher_s:.2f}",
                "end-to-end s, shared costs per student": _seconds(row.e2e_student_s),
                "× (per student)": _speedup(row.e2e_student_speedup),
                "end-to-end s, shared costs once per sweep": _seconds(row.e2e_sweep_s),
                "× (once per sweep)": _speedup(row.e2e_sweep_speedup),
                "end-to-end s, shared costs owned": _seconds(row.e2e_zero_s),
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
                "best recipe (shared costs once per sweep)": row.best,
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
