"""report.md: the answer lines, the method, the study summary and each experiment's tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datapruning.report.plots import (
    BARS_PLOT_NAME,
    PLOT_NAME,
    PRUNING_PLOT_NAME,
    SIZE_PLOT_NAME,
)
from datapruning.report.tables import (
    _REPEAT_NOTE,
    _REPEAT_TITLE,
    _TIME_NOTE,
    _TIME_TITLE,
    Experiment,
    _target_spec,
    display_repeats,
    display_study,
    display_table,
    markdown_table,
    repeat_table,
    smallest_size_sentence,
    study_table,
    time_table,
)

REPORT_NAME = "report.md"

_METHOD = (
    "Times are training wall-clock seconds, evaluation excluded. Each run's time to the target "
    "is interpolated linearly between the last evaluation below the target and the first at or "
    "above it (the first evaluation's own time if it already reached it), so runs evaluated on "
    "different step grids compare fairly; the table gives the median over seeds and "
    "[min–max]. A time, and so a speed-up, needs every seed to reach the target. *Student* "
    "counts the run alone; *end-to-end* adds the shared costs it used, its scores and, for "
    "KD, its teacher's training and logits, three ways: charged to each student, once per "
    "sweep (the scores' seconds shared among the experiment's students that read them, the "
    "teacher's among its KD students), or owned (an existing model: only its logits, shared; "
    "scores you have: nothing). Scores recorded by the full-data runs cost their recording "
    "seconds only. Speed-ups divide full data's median time to the "
    "target by the recipe's. KD *yes (online)*: with augmentation the teacher ran on every "
    "augmented batch, inside the student's seconds; plain *yes* read cached logits. The target "
    "comes from the recipe `full` only; `full-short` is full data on a shortened schedule, a "
    "recipe like the others. Budget *steps*: the subset run was given as many optimizer steps "
    "as full data. *Steps to target* is the same crossing counted in optimizer steps: a "
    "measure of work that the machine's load does not move, where seconds on a shared "
    "machine do."
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
    # In a study, each answer names its experiment: two of them may share dataset and size.
    answers = [f"- {_named(e, e.sections[0].answer)}" for e in experiments if e.sections]
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
        lines += repeat_lines(experiments)
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


def repeat_lines(experiments: Sequence[Experiment]) -> list[str]:
    """The clock's spread between identical full-data runs (none: no run repeats)."""
    repeats = repeat_table(experiments)
    if repeats.empty:
        return []
    shown, largest = display_repeats(repeats)
    right = ["seed", "steps", "training s", "slowest / fastest"]
    return [
        f"## {_REPEAT_TITLE}",
        "",
        _REPEAT_NOTE,
        "",
        *markdown_table(shown, right=right),
        "",
        largest,
        "",
    ]


def _plot_lines(plots: dict[str, str], name: str) -> list[str]:
    return [f"![{plots[name]}]({name})", ""] if name in plots else []


def _named(experiment: Experiment, answer: str) -> str:
    return f"{experiment.name}: {answer}" if experiment.name else answer
