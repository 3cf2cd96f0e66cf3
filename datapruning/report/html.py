"""report.html: one self-contained page (plots as base64 images, sortable tables, no
external resource) with the machine, library versions and command behind the report."""

from __future__ import annotations

import base64
import html
import os
import platform
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from datapruning.report.markdown import _METHOD, _context, _named
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
    repeat_table,
    smallest_size_sentence,
    study_table,
    time_table,
)

HTML_NAME = "report.html"

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
            answer = _named(experiment, experiment.sections[0].answer)
            parts.append(f'<p class="answer">{_md_inline(answer)}</p>')
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
        repeats = repeat_table(experiments)
        if not repeats.empty:
            shown, largest = display_repeats(repeats)
            parts += [
                f"<h2>{_REPEAT_TITLE}</h2>",
                f"<p>{html.escape(_REPEAT_NOTE)}</p>",
                _html_table(shown),
                f"<p>{largest}</p>",
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
