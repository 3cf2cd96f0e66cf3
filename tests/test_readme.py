"""The README stays short, links only into the repository, and cites results that exist.

The long-form documentation is the site built from docs/ (tests/test_docs_site.py opens
it in a browser); the README is the front page: at most about 150 lines, its links
relative paths to files of this repository (no ``../`` out of it), its test command the
one CI runs, every ``bench/results/*.json`` that it or a docs page names a committed
file, and its figures, like the advice of docs/recipes.md, quoted from the study
(docs/results.md) or a bench result, not new ones.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_links_resolve_inside_the_repository():
    for target in LINK.findall(README.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if re.match(r"[a-z]+:", target) or not path:
            continue
        resolved = (REPO / path).resolve()
        assert REPO in resolved.parents, f"README links outside the repository: {target}"
        assert resolved.exists(), f"README links to {target}, which does not exist"


def test_readme_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M)
    assert "make test" in README.read_text(encoding="utf-8")
    assert re.search(r"^make docs$", ci, re.M), "CI builds the documentation site"


def test_every_cited_result_file_is_committed():
    """A figure's source named in the README or docs/ (bench/results/X.json) exists."""
    results = {p.name for p in (REPO / "bench" / "results").glob("*.json")}
    pages = [README, *sorted((REPO / "docs").rglob("*.md"))]
    cited = 0
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for name in re.findall(r"bench/results/([\w.-]+\.json)", text):
            cited += 1
            assert name in results, f"{page.relative_to(REPO)} cites bench/results/{name}"
    assert cited >= 20, "the benchmark pages cite their bench/results files"


FIGURE = re.compile(r"\d[\d,]*(?:\.\d+)?(?:–\d+(?:\.\d+)?)?(?:×|%| s\b)")


def test_recipe_advice_quotes_the_study():
    """docs/recipes.md adds no figure: each one it gives is in the study's pages."""
    advice = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    study = (REPO / "docs" / "results.md").read_text(encoding="utf-8") + (
        REPO / "docs" / "study" / "report.md"
    ).read_text(encoding="utf-8")
    figures = set(FIGURE.findall(advice))
    assert len(figures) >= 20
    assert not sorted(f for f in figures if f not in study), "figures not in docs/results.md"


def test_readme_figures_come_from_the_study_or_bench_results():
    """The README's figures are quoted from docs/results.md (the study) or bench/results."""
    readme = README.read_text(encoding="utf-8")
    sources = (REPO / "docs" / "results.md").read_text(encoding="utf-8") + "".join(
        p.read_text(encoding="utf-8") for p in (REPO / "bench" / "results").glob("*.json")
    )
    # Measured figures have decimals (settings such as "30/50/70% kept" do not); a range
    # a–b× quotes its two ends.
    figures: set[str] = set()
    for figure in re.findall(r"\d[\d,]*\.\d+(?:–\d+\.\d+)?(?:×|%| s\b)", readme):
        unit = re.sub(r"[\d.,–]", "", figure)
        figures.update(end + unit for end in re.findall(r"\d[\d,]*\.\d+", figure))
    assert len(figures) >= 5, "the README quotes the study's answer line"
    assert not sorted(f for f in figures if f not in sources)
