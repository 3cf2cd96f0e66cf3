"""The report's PNGs (matplotlib, Agg backend, imported only when a plot is drawn).

Curves of test accuracy against training seconds, the pruning curve (final accuracy
against kept fraction), time-to-target bars and, for a study, the end-to-end speed-up
against training-set size.
"""

from __future__ import annotations

import io
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from datapruning.report.runs import FULL_RECIPE, RunRecord
from datapruning.report.tables import (
    Experiment,
    Section,
    _kept,
    best_row,
    recipe_name,
)

PLOT_NAME = "tta.png"
PRUNING_PLOT_NAME = "pruning_curve.png"
BARS_PLOT_NAME = "time_to_target.png"
SIZE_PLOT_NAME = "speedup_vs_size.png"
_SPARSE_SUFFIX = re.compile(r"-sp[0-9.]+$")


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
    """Final test accuracy (median over seeds, bars from the lowest to the highest) against
    kept fraction, one line per recipe (metric), dashed with KD, one panel per budget; full
    data a black square at 1.0 and a dotted line across.

    Medians and ranges, not means and standard deviations: one diverged seed (a run stuck
    at chance) would otherwise drag a recipe's point and stretch the axis over the others.
    The axis spans the medians; a range that goes further runs off it.
    """
    plt = _pyplot()
    budgets = sorted({run.budget for run in runs})
    full = [run.summary["final_test_acc"] for run in runs if run.recipe == FULL_RECIPE]
    others = [run for run in runs if run.recipe != FULL_RECIPE]
    colours = _colours(run.recipe for run in others)
    fig, axes = plt.subplots(
        1, len(budgets), figsize=(5.5 * len(budgets), 4.0), sharey=True, squeeze=False
    )
    medians = [statistics.median(full)] if full else []
    for ax, budget in zip(axes[0], budgets, strict=True):
        lines: dict[tuple[str, bool], dict[float, list[float]]] = {}
        for run in others:
            if run.budget == budget:
                points = lines.setdefault((run.recipe, run.kd), {})
                points.setdefault(_kept(run), []).append(run.summary["final_test_acc"])
        for (recipe, kd), points in sorted(lines.items()):
            xs = sorted(points)
            middle = [statistics.median(points[x]) for x in xs]
            medians += middle
            ax.errorbar(
                xs,
                middle,
                yerr=[
                    [m - min(points[x]) for m, x in zip(middle, xs, strict=True)],
                    [max(points[x]) - m for m, x in zip(middle, xs, strict=True)],
                ],
                color=colours[recipe],
                linestyle=_style(kd, budget),
                marker="o",
                markersize=4,
                capsize=3,
                linewidth=1.2,
            )
        if full:
            middle = statistics.median(full)
            ax.axhline(middle, color="black", linestyle=":", linewidth=1)
            ax.errorbar(
                [1.0],
                [middle],
                yerr=[[middle - min(full)], [max(full) - middle]],
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
    if medians:
        spread = max(medians) - min(medians)
        margin = 0.15 * spread + 0.005
        axes[0][0].set_ylim(max(0.0, min(medians) - margin), min(1.0, max(medians) + margin))
    axes[0][0].set_ylabel("final test accuracy (median, min–max)")
    fig.tight_layout()
    return _png(fig)


def plot_time_to_target(section: Section) -> bytes:
    """Horizontal bars: each row's median student time to the target (min–max error bars)
    and, outlined, its end-to-end time with teacher and scores once per sweep; rows that did not
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
        f"time to {section.target.accuracy:.1%} (teacher and scores once per sweep)", fontsize=9
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_speedup_vs_size(experiments: Sequence[Experiment]) -> bytes:
    """End-to-end speed-up (teacher and scores once per sweep) against training-set size:
    the best recipe per experiment in black, the best of each metric in colour, one
    marker per dataset, a dotted line at 1×.

    Lines join one experiment per dataset and size: the one with the most runs. Others
    of the same size (a variant, such as cheaper scoring) show their best recipe as a
    hollow marker, so that the lines read as size alone.
    """
    plt = _pyplot()
    markers = dict(zip(sorted({e.dataset for e in experiments}), "osD^vP*X", strict=False))
    families: dict[str, dict[str, list[tuple[int, float]]]] = {}
    best: dict[str, list[tuple[int, float]]] = {}
    variants: list[tuple[str, int, float]] = []
    main: dict[tuple[str, int], Experiment] = {}
    for experiment in experiments:
        if experiment.sections and experiment.num_train:
            key = (experiment.dataset, experiment.num_train)
            if key not in main or len(experiment.runs) > len(main[key].runs):
                main[key] = experiment
    for experiment in experiments:
        if not experiment.sections or not experiment.num_train:
            continue
        table = experiment.sections[0].table
        size = experiment.num_train
        choice = best_row(table, "sweep")
        speedup = math.nan if choice is None else choice["e2e_sweep_speedup"]
        if main[(experiment.dataset, size)] is not experiment:
            if not math.isnan(speedup):
                variants.append((experiment.dataset, size, speedup))
            continue
        if not math.isnan(speedup):
            best.setdefault(experiment.dataset, []).append((size, speedup))
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
    for dataset, size, speedup in variants:
        ax.plot(
            [size],
            [speedup],
            marker=markers[dataset],
            markersize=7,
            color="black",
            fillstyle="none",
        )
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}×"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: f"{y:g}×"))
    ax.set_xlabel("training-set size (examples)")
    ax.set_ylabel("end-to-end speed-up vs full data")
    ax.set_title("time to target, teacher and scores once per sweep", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="black", linewidth=2.2, label="best recipe")]
    if variants:
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                marker="o",
                fillstyle="none",
                linestyle="",
                label="best, variant experiment",
            )
        )
    handles += [Line2D([], [], color=colours[f], label=f) for f in sorted(families)][:10]
    handles += [
        Line2D([], [], color="grey", marker=m, linestyle="", label=d) for d, m in markers.items()
    ]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _png(fig)
