"""What the cache keys' source hash reads: the modules that compute, not those that orchestrate."""

from __future__ import annotations

from pathlib import Path

import datapruning
from datapruning.pipeline import keys

PACKAGE = Path(datapruning.__file__).parent


def hashed(relative: str) -> bool:
    assert (PACKAGE / relative).is_file(), relative
    return keys._computes(relative)


def test_the_cli_report_and_orchestrating_pipeline_modules_are_left_out():
    assert not hashed("cli.py")
    assert not hashed("report/markdown.py")
    for path in sorted((PACKAGE / "pipeline").glob("*.py")):
        # The recipes decide each student's subset and settings: editing them retrains.
        assert hashed(f"pipeline/{path.name}") == (path.name == "recipes.py"), path.name


def test_the_modules_that_compute_are_hashed():
    for relative in ("train/loop.py", "scoring/el2n.py", "data/samplers.py", "config.py"):
        assert hashed(relative)
    assert len(keys.source_hash()) == 16
