"""constraints.txt: the versions CI resolved, which ``make setup`` installs.

It must pin every runtime and dev dependency pyproject.toml declares (a missing
one would float between installs), at a version pyproject's own specifier
accepts (torch==2.13.0, prefect==3.8.8, fastapi>=0.139,<0.151), and hold plain
``name==version`` lines only: no editable installs, paths or the project itself.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PROJECT = "datapruning-tta"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def declared() -> list[Requirement]:
    """[project] dependencies and every optional-dependencies list (3.10 has no tomllib)."""
    text = (REPO / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("[project.scripts]", 1)[0]
    project = re.sub(r"#.*$", "", project, flags=re.MULTILINE)  # no spec holds a '#'
    dependencies = project.split("[project.optional-dependencies]", 1)
    arrays = re.findall(
        r"^dependencies\s*=\s*\[(.*?)\]$", dependencies[0], re.MULTILINE | re.DOTALL
    )
    arrays += re.findall(r"^[\w-]+\s*=\s*\[(.*?)\]$", dependencies[1], re.MULTILINE | re.DOTALL)
    requirements = [
        Requirement(spec) for array in arrays for spec in re.findall(r'"([^"]+)"', array)
    ]
    return [r for r in requirements if canonicalize_name(r.name) != PROJECT]


def pins(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt: {line!r} is not a name==version pin"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"constraints.txt pins {name} twice"
        found[name] = match.group(2)
    return found


PINS = pins((REPO / "constraints.txt").read_text())


def test_declared_dependencies_are_parsed() -> None:
    names = {canonicalize_name(r.name) for r in declared()}
    # The parser sees the pinned ones, the ffcv extra and the dev tools.
    assert {"torch", "prefect", "fastapi", "ffcv", "prefect-dask", "pytest", "ruff"} <= names
    assert len(names) >= 25


def test_constraints_hold_only_plain_pins_and_not_the_project() -> None:
    assert len(PINS) > 50  # the whole resolved stack, not just the direct dependencies
    assert PROJECT not in PINS and "datapruning" not in PINS
    for name, version in PINS.items():
        Version(version)  # a version, not a path or URL
        assert name == canonicalize_name(name)


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_every_dependency_is_pinned_at_a_version_pyproject_accepts(
    requirement: Requirement,
) -> None:
    name = canonicalize_name(requirement.name)
    assert name in PINS, f"{name} is declared in pyproject.toml but not pinned: make constraints"
    assert requirement.specifier.contains(PINS[name], prereleases=True), (
        f"constraints.txt pins {name}=={PINS[name]}, pyproject.toml wants {requirement.specifier}"
    )


@pytest.mark.parametrize(
    ("name", "version"),
    [("torch", "2.13.0"), ("prefect", "3.8.8"), ("ffcv", "1.0.2"), ("prefect-dask", "0.3.7")],
)
def test_pyprojects_exact_pins_are_the_constraints(name: str, version: str) -> None:
    # torch is the CPU build (2.13.0+cpu); the local label does not change the release.
    assert Version(PINS[name]).public == version


def test_the_installed_stack_is_the_pinned_one() -> None:
    # make setup installs with -c constraints.txt; a venv upgraded by hand since then says so
    # here, and make constraints records it.
    drift = {}
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        installed = metadata.version(name)
        if Version(installed) != Version(PINS[name]):
            drift[name] = (PINS[name], installed)
    assert not drift, f"pinned vs installed: {drift}; rerun make setup, or make constraints"


def test_make_setup_installs_with_the_constraints() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^CONSTRAINTS := constraints\.txt$", makefile, re.MULTILINE)
    install = [
        line
        for line in makefile.splitlines()
        if 'pip install -q -c $(CONSTRAINTS) -e ".[dev]"' in line
    ]
    assert len(install) == 1
    # A changed constraints file re-runs the install.
    assert re.search(r"^\$\(STAMP\): pyproject\.toml \$\(CONSTRAINTS\)$", makefile, re.MULTILINE)
