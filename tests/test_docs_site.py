"""The documentation site builds strictly and every page renders in a real browser.

``mkdocs build --strict`` (what ``make docs`` and CI run) builds the site into a
temporary folder; then headless Chromium (Debian's ``chromium``, which ``make setup``
installs) loads every page from disk and this test reads the DOM it rendered:

- the page rendered: the theme's script ran (it marks ``<html>`` with
  ``js-focus-visible``), the article has a non-empty ``<h1>``, and no Markdown
  was left unrendered (a literal ``::: `` block or a generator marker);
- no script on it raised (Chromium's console log has no ``Uncaught`` error);
- every internal link and asset (``<a href>``, ``<img src>``, ``<script src>``,
  stylesheets) points at a file of the site, and a link's ``#fragment``, if any, at an
  element of that page with that id;
- nothing is fetched from the internet: no stylesheet, script or font from another
  host (the theme's web fonts are off).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return None


class _Page(HTMLParser):
    """What the test reads from one rendered page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.html_classes: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.remote_assets: list[str] = []
        self.h1_text = ""
        self._in_article_h1 = False
        self._article_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.html_classes = a.get("class", "").split()
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img" and a.get("src"):
            self.links.append(a["src"])
        if tag == "script" and a.get("src"):
            self.links.append(a["src"])
        if tag == "link" and a.get("href") and a.get("rel") in ("stylesheet", "preload", "icon"):
            self.links.append(a["href"])
        if tag in ("script", "img") and a.get("src", "").startswith(("http:", "https:", "//")):
            self.remote_assets.append(a["src"])
        remote = a.get("href", "").startswith(("http:", "https:", "//"))
        if tag == "link" and remote and a.get("rel") in ("stylesheet", "preload", "icon"):
            self.remote_assets.append(a["href"])
        if tag == "article":
            self._article_depth += 1
        if tag == "h1" and self._article_depth:
            self._in_article_h1 = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self._article_depth -= 1
        if tag == "h1":
            self._in_article_h1 = False

    def handle_data(self, data: str) -> None:
        if self._in_article_h1:
            self.h1_text += data


def _read(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def site_problems(site: Path, rendered: dict[Path, _Page]) -> list[str]:
    """What is wrong with the rendered pages: unrendered pages, broken links, remote assets."""
    problems: list[str] = []
    for page, dom in rendered.items():
        name = page.relative_to(site).as_posix()
        if "js-focus-visible" not in dom.html_classes:
            problems.append(f"{name}: the theme's script did not run")
        if not dom.h1_text.strip():
            problems.append(f"{name}: no title (<h1>) in the article")
        text = page.read_text(encoding="utf-8")
        for leftover in ("<!-- generated:", "\n::: datapruning"):
            if leftover in text:
                problems.append(f"{name}: {leftover.strip()!r} left unrendered")
        problems += [f"{name}: loads {url} from the internet" for url in dom.remote_assets]
        for link in dom.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue  # external: not this site's to resolve
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or site.resolve() not in target.parents:
                problems.append(f"{name}: link {link!r} resolves to no file of the site")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = rendered[target].ids if target in rendered else _read(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{name}: link {link!r}: no #{parts.fragment} on that page")
    return problems


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (the dev extra has it)")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"
    return out


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if p.name != "404.html")


@pytest.mark.slow
def test_every_page_renders_and_every_internal_link_resolves(site: Path, tmp_path: Path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; make setup does)")
    pages = _pages(site)
    # The nav's pages, at least: guides, recipes, results, benchmarks and the references.
    names = {p.relative_to(site).as_posix() for p in pages}
    for expected in (
        "index.html",
        "recipes.html",
        "results.html",
        "benchmarks.html",
        "architecture.html",
        "guides/your-loop.html",
        "reference/cli.html",
        "reference/config.html",
        "reference/api.html",
    ):
        assert expected in names, f"{expected} missing from the built site"

    rendered: dict[Path, _Page] = {}
    dumps = tmp_path / "dom"
    dumps.mkdir()
    profile = tmp_path / "profile"
    script_errors: list[str] = []
    start = time.monotonic()
    for page in pages:
        result = subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        name = page.relative_to(site).as_posix()
        assert result.returncode == 0 and "<html" in result.stdout, (
            f"{name}: chromium rendered nothing (exit {result.returncode}): {result.stderr[-2000:]}"
        )
        script_errors += [
            f"{name}: {line.split(':CONSOLE', 1)[1]}"
            for line in result.stderr.splitlines()
            if ":CONSOLE" in line and "Uncaught" in line
        ]
        dom = dumps / name.replace("/", "__")
        dom.write_text(result.stdout, encoding="utf-8")
        rendered[page] = _read(dom)
    seconds = time.monotonic() - start
    print(f"{len(pages)} pages rendered in headless chromium in {seconds:.1f} s")

    problems = script_errors + site_problems(site, rendered)
    assert not problems, "\n".join(problems)


def test_the_check_finds_broken_links_anchors_and_remote_assets(tmp_path: Path):
    """The checker itself, on a two-page site written by hand (no browser needed)."""
    (tmp_path / "sub").mkdir()
    good = (
        '<html class="js-focus-visible"><body><article><h1 id="top">A</h1>'
        '<a href="sub/b.html#here">ok</a><a href="https://example.org/">external</a>'
        "</article></body></html>"
    )
    bad = (
        '<html class="js-focus-visible"><head><link rel="stylesheet" '
        'href="https://fonts.googleapis.com/css"></head><body><article><h1 id="here"></h1>'
        '<a href="../a.html#nowhere">x</a><a href="missing.html">y</a>'
        '<img src="../img.png"></article></body></html>'
    )
    (tmp_path / "a.html").write_text(good)
    (tmp_path / "sub" / "b.html").write_text(bad)
    pages = {tmp_path / "a.html": None, tmp_path / "sub" / "b.html": None}
    rendered = {page: _read(page) for page in pages}
    problems = site_problems(tmp_path, rendered)
    assert not [p for p in problems if p.startswith("a.html")]
    joined = "\n".join(problems)
    assert "sub/b.html: no title" in joined
    assert "no #nowhere on that page" in joined
    assert "'missing.html' resolves to no file" in joined
    assert "'../img.png' resolves to no file" in joined
    assert "loads https://fonts.googleapis.com/css from the internet" in joined
    assert len(problems) == 5
