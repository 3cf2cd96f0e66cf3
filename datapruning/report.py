"""Time-to-accuracy reports: how long each recipe takes to reach a target.

The target is the full-data run's final test accuracy minus ``target_drop``
(one point by default). Each run's time to the target is read from its
``metrics.jsonl`` (training seconds at the first evaluation that reached it),
so the target can be chosen after the runs finished. Student-only time counts
the student's training; end-to-end time adds what the student used: the scoring
cost when it trained on the scores, and for distilled students the teacher's
training and its logits (the same for every student of a teacher). Those shared
costs are also listed once per experiment, and cells that failed for good are
listed with their error.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from datapruning._io import atomic_path, write_text
from datapruning.errors import DataPruningError
from datapruning.train.loop import METRICS_NAME
from datapruning.train.summary import SUMMARY_NAME, check_summary_format
from datapruning.train.tta import time_to_accuracy

REPORT_NAME = "report.md"
# Written by datapruning.orchestration: a cell that failed for good, and a teacher's logits cost.
FAILURE_NAME = "failure.json"
TEACHER_LOGITS_RECORD = "teacher_logits.json"
PLOT_NAME = "tta.png"
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


@dataclass(frozen=True)
class RunRecord:
    path: Path
    summary: dict[str, Any]
    curve: list[dict[str, Any]]

    @property
    def recipe(self) -> str:
        return self.summary.get("recipe", self.path.name)

    def seconds_to(self, target: float) -> float | None:
        points = [(point["train_seconds"], point["test_acc"]) for point in self.curve]
        return time_to_accuracy(points, [target]).popitem()[1]

    @property
    def overhead_seconds(self) -> float:
        """Work done before this run could start: scoring, and for KD the teacher's
        training and its logits on the training set."""
        return sum(
            float(self.summary.get(key) or 0)
            for key in ("scoring_seconds", "teacher_seconds", "teacher_logits_seconds")
        )


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


def tta_table(runs: list[RunRecord], target_drop: float = 0.01) -> tuple[pd.DataFrame, float]:
    """One row per recipe (mean over its seeds) and the target accuracy used."""
    full = [run for run in runs if run.recipe == FULL_RECIPE]
    if not full:
        raise DataPruningError(
            f"no full-data run (recipe {FULL_RECIPE!r}) among the runs; it sets the target accuracy"
        )
    target = _mean(run.summary["final_test_acc"] for run in full) - target_drop
    groups: dict[tuple[str, float, bool], list[RunRecord]] = {}
    for run in runs:
        key = (run.recipe, _kept(run), bool(run.summary.get("kd")))
        groups.setdefault(key, []).append(run)

    rows = []
    for (recipe, kept, kd), members in groups.items():
        times = [run.seconds_to(target) for run in members]
        reached = [t for t in times if t is not None]
        overhead = _mean(run.overhead_seconds for run in members)
        rows.append(
            {
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
                "runs": len(members),
                "final_acc": _mean(run.summary["final_test_acc"] for run in members),
                "best_acc": _mean(run.summary["best_test_acc"] for run in members),
                "train_s": _mean(run.summary["train_seconds"] for run in members),
                "eval_s": _mean(run.summary["eval_seconds"] for run in members),
                "reached": len(reached),
                # Only a recipe that reached the target in every run gets a time.
                "tta_s": _mean(reached) if len(reached) == len(members) else math.nan,
                "overhead_s": overhead,
            }
        )
    table = pd.DataFrame(rows)
    table["e2e_tta_s"] = table["tta_s"] + table["overhead_s"]
    full_tta = table.loc[table["recipe"] == FULL_RECIPE, "tta_s"].iloc[0]
    table["speedup"] = full_tta / table["tta_s"]
    table["e2e_speedup"] = full_tta / table["e2e_tta_s"]
    table["order"] = table["recipe"] != FULL_RECIPE
    table = table.sort_values(
        ["order", "kept", "recipe", "kd"], ascending=[True, False, True, True]
    )
    return table.drop(columns="order").reset_index(drop=True), target


def _kd_cell(kd: bool, teacher: str) -> str:
    """``yes`` for KD from cached logits; ``yes (online)`` when the teacher ran on each
    augmented batch (its forward inside the student's training seconds)."""
    if not kd:
        return "no"
    return "yes" if teacher == "cached" else f"yes ({teacher})"


def render_markdown(
    table: pd.DataFrame,
    target: float,
    target_drop: float,
    title: str,
    context: str = "",
    plot: str | None = None,
    shared: list[dict[str, Any]] | None = None,
    failures: list[dict[str, Any]] | None = None,
) -> str:
    def seconds(value: float) -> str:
        return "not reached" if math.isnan(value) else f"{value:.2f}"

    def speedup(value: float) -> str:
        return "—" if math.isnan(value) else f"{value:.2f}×"

    lines = [f"# Time to accuracy: {title}", ""]
    if context:
        lines += [context, ""]
    full_acc = target + target_drop
    lines += [
        f"Target: **{target:.1%}** test accuracy (the full-data run's {full_acc:.1%} "
        f"minus {target_drop * 100:g} point{'s' if target_drop != 0.01 else ''}).",
        "Times are training wall-clock seconds, evaluation excluded (its cost is the `eval s` "
        "column). *Student* counts the run alone; *end-to-end* adds what the student used: the "
        "scoring cost if it trained on the scores, and for KD the teacher's training and its "
        "logits. Speed-up is the full-data run's time to the target divided by the recipe's. "
        "KD *yes (online)*: with augmentation the teacher ran on every augmented batch, its "
        "forward pass inside the student's seconds; plain *yes* read its cached logits.",
        "",
        "| recipe | kept | KD | runs | final acc | best acc | train s | eval s "
        "| student s to target | speed-up | end-to-end s to target | end-to-end speed-up |",
        "|---|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table.itertuples():
        tta = seconds(row.tta_s)
        if math.isnan(row.tta_s) and row.reached:
            tta += f" ({row.reached}/{row.runs} runs reached it)"
        lines.append(
            f"| {row.recipe} | {row.kept:.0%} | {_kd_cell(row.kd, row.kd_teacher)} | {row.runs} "
            f"| {row.final_acc:.1%} | {row.best_acc:.1%} | {row.train_s:.2f} | {row.eval_s:.2f} "
            f"| {tta} | {speedup(row.speedup)} | {seconds(row.e2e_tta_s)} | {speedup(row.e2e_speedup)} |"
        )
    lines += ["", verdict(table, target)]
    if shared:
        lines += [
            "",
            "Shared costs, paid once for the whole experiment (each student above is "
            "charged the ones it used):",
            "",
            "| cost | seconds |",
            "|---|---:|",
            *(f"| {row['cost']} | {row['seconds']:.2f} |" for row in shared),
        ]
    if failures:
        lines += [
            "",
            f"Failed runs ({len(failures)}; the table leaves them out):",
            "",
            "| run | error |",
            "|---|---|",
            *(f"| {row['run']} | {str(row['error']).replace('|', '/')} |" for row in failures),
        ]
    if plot:
        lines += ["", f"![test accuracy against training time]({plot})"]
    return "\n".join(lines) + "\n"


def verdict(table: pd.DataFrame, target: float) -> str:
    """One sentence: the fastest pruned recipe to the target, or that none reached it."""
    full = table[table["recipe"] == FULL_RECIPE].iloc[0]
    pruned = table[(table["recipe"] != FULL_RECIPE) & table["tta_s"].notna()]
    full_reached = not math.isnan(full["tta_s"])
    if pruned.empty:
        others = "only full-data training did" if full_reached else "nor did full-data training"
        return f"No pruned recipe reached {target:.1%} in every run; {others}."
    best = pruned.loc[pruned["tta_s"].idxmin()]
    kd = " + KD" if best["kd"] else ""
    if not full_reached:
        return (
            f"Fastest recipe to {target:.1%}: **{best['recipe']} {best['kept']:.0%}{kd}** in "
            f"{best['tta_s']:.2f} s of training (end-to-end {best['e2e_tta_s']:.2f} s); "
            "the full-data run did not reach it in every run, so there is no speed-up to report."
        )
    return (
        f"Fastest pruned recipe to {target:.1%}: **{best['recipe']} {best['kept']:.0%}{kd}** in "
        f"{best['tta_s']:.2f} s of training ({best['speedup']:.2f}× the full-data run's "
        f"{full['tta_s']:.2f} s; end-to-end {best['e2e_tta_s']:.2f} s, {best['e2e_speedup']:.2f}×)."
    )


def plot_curves(runs: list[RunRecord], target: float, path: str | os.PathLike[str]) -> Path:
    """Test accuracy against training seconds: one panel per kept fraction.

    Each panel shows the full-data runs in black and every recipe at that
    fraction in its own colour (all seeds, solid without KD, dashed with KD);
    the target accuracy is a dotted line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = [run for run in runs if run.recipe == FULL_RECIPE]
    fractions = sorted({_kept(run) for run in runs if run.recipe != FULL_RECIPE}, reverse=True)
    fractions = fractions or [1.0]
    recipes = sorted({run.recipe for run in runs if run.recipe != FULL_RECIPE})
    colours = {recipe: plt.get_cmap("tab10")(i % 10) for i, recipe in enumerate(recipes)}
    fig, axes = plt.subplots(
        1, len(fractions), figsize=(4.2 * len(fractions), 3.8), sharey=True, squeeze=False
    )
    for ax, fraction in zip(axes[0], fractions, strict=True):
        members = [run for run in runs if run.recipe != FULL_RECIPE and _kept(run) == fraction]
        for run in full + members:
            kd = bool(run.summary.get("kd"))
            label = run.recipe + (" + KD" if kd else "")
            ax.plot(
                [point["train_seconds"] for point in run.curve],
                [point["test_acc"] for point in run.curve],
                color="black" if run.recipe == FULL_RECIPE else colours[run.recipe],
                linestyle="--" if kd else "-",
                linewidth=1.2,
                label=label,
            )
        ax.axhline(target, linestyle=":", color="grey", linewidth=1)
        ax.set_title(f"kept {fraction:.0%}")
        ax.set_xlabel("training seconds (evaluation excluded)")
        ax.set_ylim(max(0.0, target - 0.3), 1.0)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))  # one entry per recipe, not per seed
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("test accuracy")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def _kept(run: RunRecord) -> float:
    return round(float(run.summary["kept_fraction"]), 6)


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


def find_failures(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Cells of a pipeline or sweep that failed for good (their failure.json)."""
    failures = []
    for path in sorted(Path(root).rglob(FAILURE_NAME)):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            failures.append({"run": record.get("run", path.parent.name), **record})
    return failures


def write_report(
    root: str | os.PathLike[str], target_drop: float = 0.01, title: str | None = None
) -> tuple[Path, str]:
    """Write report.md and tta.png for the runs under ``root``; return the path and text."""
    root = Path(root)
    runs = find_runs(root)
    table, target = tta_table(runs, target_drop)
    full = next(run for run in runs if run.recipe == FULL_RECIPE).summary
    dataset = full.get("dataset", {})
    context = (
        f"Dataset `{dataset.get('name', '?')}` (fingerprint `{dataset.get('fingerprint', '?')}`, "
        f"{full.get('num_train_examples', '?')} training examples), model `{full.get('model', '?')}`, "
        f"{full.get('epochs', '?')} epochs per run."
    )
    text = render_markdown(
        table,
        target,
        target_drop,
        title or root.name,
        context,
        PLOT_NAME,
        shared=shared_costs(root, runs),
        failures=find_failures(root),
    )
    # Written only once everything is read, so a bad run or scores file leaves no new file.
    plot_curves(runs, target, root / PLOT_NAME)
    path = write_text(root / REPORT_NAME, text)
    return path, text


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan
