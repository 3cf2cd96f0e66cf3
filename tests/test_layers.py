"""The import layers: what lint-imports cannot see, and lint-imports itself.

``make lint`` runs ``lint-imports`` on the contracts in pyproject.toml. grimp reads
flows/ and models/ as the checkout's top-level packages, so an import of their
installed names (``datapruning.flows``, ``datapruning.models``) from inside the
datapruning package is invisible to it: checked here from the source.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "datapruning"


# Which files of datapruning/ may import each (their layers are above it in pyproject.toml).
def may_import(target: str, relative: str) -> bool:
    if target == "datapruning.flows":  # only the entry points are above the flows
        return relative in ("cli.py", "api.py")
    # models sits beside kernels: the data, scores, kernels and base modules are not above it.
    below = (
        "data/",
        "scores.py",
        "kernels/",
        "_io.py",
        "_interrupt.py",
        "_sections.py",
        "errors.py",
    )
    return not relative.startswith(below)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("target", ["datapruning.flows", "datapruning.models"])
def test_installed_flows_and_models_are_imported_only_from_above(target):
    wrong = sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if not may_import(target, path.relative_to(PACKAGE).as_posix())
        and any(m == target or m.startswith(target + ".") for m in imported_modules(path))
    )
    assert wrong == [], f"{target} is imported from below its layer"


def test_lint_imports_keeps_every_contract():
    script = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
