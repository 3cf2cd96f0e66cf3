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
- **Shared costs three ways**, the teacher and the scores alike: charged to each
  student that used them (as if each had trained its own teacher and scored the data
  alone), once per sweep (the teacher's training and logits divided among the KD
  students of the experiment that distil from it; a scores file's seconds among the
  students that read it) and owned (an existing model as teacher: only its logits,
  still shared; scores you have: nothing). Scores that the full-data runs recorded
  (``scoring.source: runs``) cost only their recording seconds; before, scoring was
  charged in full to every student whichever the view.
- **Experiments**: runs are grouped by their parent directory, so a root holds one
  experiment or a study of several (e.g. one per dataset size); a study gets a
  summary table, the smallest training-set size at which pruning pays and a
  speed-up-vs-size plot.

Outputs: ``report.md``, a self-contained ``report.html`` (plots embedded, tables
sortable by clicking a header, the machine, library versions and command) and the
PNGs, all written atomically and only once every input was read.

The package, in import order (each module imports only the ones before it):
``runs`` (reading run directories, failures and shared costs), ``tables`` (targets,
time-to-target tables, answer lines, study summary, where the time goes, display
frames), ``plots`` (the PNGs), ``markdown`` (report.md), ``html`` (report.html) and,
here, ``write_report``, which draws everything and writes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from datapruning._io import atomic_write, write_text
from datapruning.errors import DataPruningError
from datapruning.report.html import (
    HTML_NAME,
    environment,
    render_html,
)
from datapruning.report.markdown import (
    REPORT_NAME,
    render_experiment,
    render_markdown,
)
from datapruning.report.plots import (
    BARS_PLOT_NAME,
    PLOT_NAME,
    PRUNING_PLOT_NAME,
    SIZE_PLOT_NAME,
    plot_curves,
    plot_pruning_curve,
    plot_speedup_vs_size,
    plot_time_to_target,
)
from datapruning.report.runs import (
    FAILURE_NAME,
    FULL_RECIPE,
    TEACHER_LOGITS_RECORD,
    RunRecord,
    crossing_seconds,
    find_failures,
    find_runs,
    load_run,
    shared_costs,
)
from datapruning.report.tables import (
    TEACHER_VIEWS,
    Experiment,
    Section,
    Target,
    best_row,
    build_experiments,
    display_study,
    display_table,
    group_experiments,
    markdown_table,
    parse_targets,
    recipe_name,
    repeat_table,
    resolve_targets,
    smallest_size_sentence,
    study_table,
    time_table,
    tta_table,
    verdict,
)

__all__ = [
    "BARS_PLOT_NAME",
    "FAILURE_NAME",
    "FULL_RECIPE",
    "HTML_NAME",
    "PLOT_NAME",
    "PRUNING_PLOT_NAME",
    "REPORT_NAME",
    "SIZE_PLOT_NAME",
    "TEACHER_LOGITS_RECORD",
    "TEACHER_VIEWS",
    "Experiment",
    "RunRecord",
    "Section",
    "Target",
    "best_row",
    "build_experiments",
    "crossing_seconds",
    "display_study",
    "display_table",
    "environment",
    "find_failures",
    "find_runs",
    "group_experiments",
    "load_run",
    "markdown_table",
    "parse_targets",
    "plot_curves",
    "plot_pruning_curve",
    "plot_speedup_vs_size",
    "plot_time_to_target",
    "recipe_name",
    "render_experiment",
    "render_html",
    "render_markdown",
    "repeat_table",
    "resolve_targets",
    "shared_costs",
    "smallest_size_sentence",
    "study_table",
    "time_table",
    "tta_table",
    "verdict",
    "write_report",
]


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
    made_by = environment(command)
    hosts = sorted(
        {str(run.summary["host"]) for e in experiments for run in e.runs if run.summary.get("host")}
    )
    if hosts:
        made_by["runs trained on"] = ", ".join(hosts)
    text = render_markdown(experiments, title, captions, orphans)
    text += "\n## Made by\n\n" + "".join(f"- {key}: `{value}`\n" for key, value in made_by.items())
    page = render_html(experiments, title, pngs, captions, made_by, orphans)
    # Written only once everything is read, so a bad run or scores file leaves no new file.
    for name, png in pngs.items():
        atomic_write(root / name, lambda tmp, png=png: tmp.write_bytes(png))
    write_text(root / HTML_NAME, page)
    path = write_text(root / REPORT_NAME, text)
    return path, text
