"""The installed layout: models/ and flows/ live inside the datapruning namespace."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_models_and_flows_import_only_inside_datapruning(tmp_path):
    # From a directory outside the checkout, so only installed packages are found.
    code = (
        "import importlib.util, datapruning.models, datapruning.flows;"
        "print(importlib.util.find_spec('models'), importlib.util.find_spec('flows'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.split() == ["None", "None"]


def test_every_package_directory_is_declared():
    # The package list is explicit (the package-dir mapping rules out find): a new
    # subpackage missing from it would be left out of a wheel.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "datapruning").rglob("__init__.py")
    }
    mapped = {f"datapruning.{name}" for name in ("models", "flows")}
    assert set(setuptools["packages"]) == on_disk | mapped
    assert setuptools["package-dir"] == {name: name.split(".")[1] for name in mapped}
