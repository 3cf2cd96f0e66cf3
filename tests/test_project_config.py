"""The test run's own safety nets, and dependencies declared where they are imported."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = (REPO / "pyproject.toml").read_text()  # tomllib is 3.11+; the project supports 3.10


def test_every_test_has_a_timeout(request):
    # A hung DDP spawn or server must fail its test, not stall CI.
    assert request.config.pluginmanager.hasplugin("timeout")
    timeout = float(request.config.getini("timeout"))
    assert 0 < timeout <= 600
    assert request.node.get_closest_marker("timeout") is None  # the ini value applies here


def _declared() -> set[str]:
    """Distributions named in [project] dependencies and optional-dependencies."""
    project = PYPROJECT.split("[project]", 1)[1].split("[project.scripts]", 1)[0]
    specs = re.findall(r'^\s*"([A-Za-z0-9_.\-]+)', project, re.MULTILINE)
    return {spec.lower() for spec in specs}


def test_scipy_is_declared_where_tests_and_benchmarks_import_it():
    users = [
        path
        for folder in ("tests", "bench", "datapruning")
        for path in (REPO / folder).rglob("*.py")
        if re.search(r"^\s*(from|import) scipy\b", path.read_text(), re.MULTILINE)
    ]
    assert users  # tests/scoring/test_grand.py, bench/scoring.py
    assert "scipy" in _declared()
    assert {"pytest-timeout", "hypothesis"} <= _declared()
