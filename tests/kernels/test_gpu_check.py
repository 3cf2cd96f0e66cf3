"""bench/gpu_check.sh fits its lease: the groups, their order and limits, and the wheels it carries."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECK = (REPO / "bench" / "gpu_check.sh").read_text()
WHEELS = (REPO / "bench" / "gpu_wheels.sh").read_text()


def steps() -> list[tuple[str, int, str]]:
    """(name, limit in seconds, command) of each ``step NAME SECONDS CMD`` line."""
    found = re.findall(r"^\s*step (\w+) (\d+) (.+)$", CHECK, re.MULTILINE)
    return [(name, int(limit), command) for name, limit, command in found]


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_check.sh")], check=True)
    subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_wheels.sh")], check=True)


def test_kernel_tests_first_compile_tests_last_within_four_minutes():
    names = [name for name, _, _ in steps()]
    work = [name for name in names if name not in ("wheels", "install")]
    assert work == ["kernel_tests", "loop_tests", "bench", "aot"]
    assert sum(limit for name, limit, _ in steps() if name in work) <= 240
    by_name = {name: command for name, _, command in steps()}
    assert "tests/kernels" in by_name["kernel_tests"] and "-m cuda" in by_name["kernel_tests"]
    assert "test_aot.py" in by_name["aot"]
    assert "--quick" in by_name["bench"]


def test_every_pytest_and_benchmark_runs_inside_a_step_with_its_log_under_out():
    for line in CHECK.splitlines():
        code = line.split("#")[0]
        if "bench/kernels.py" in code or '"${pytest[@]}"' in code:
            assert code.lstrip().startswith("step "), line
    assert 'timeout --kill-after=10 "$limit" "$@" >"$out/$name.log"' in CHECK
    assert "out=${OUT:-" in CHECK


def test_pip_show_lists_what_the_tests_import():
    shown = re.search(r"pip show (.+?)2>&1", CHECK, re.DOTALL).group(1)
    for package in (
        "hypothesis",
        "typer",
        "pandas",
        "pyarrow",
        "scikit-learn",
        "scipy",
        "matplotlib",
        "requests",
        "pydantic",
        "typing_extensions",
    ):
        assert package in shown.split(), package


def test_the_wheels_are_the_versions_this_checkout_runs():
    pinned = dict(re.findall(r"^\s+([\w-]+)==(\S+)$", WHEELS, re.MULTILINE))
    assert set(pinned) == {
        "pydantic",
        "pydantic_core",
        "annotated_types",
        "typing_inspection",
        "typing_extensions",
        "mnist1d",
    }
    for name, version in pinned.items():
        assert importlib.metadata.version(name) == version, name
    # pydantic 2.14 needs typing_extensions >= 4.16
    major, minor = (int(part) for part in pinned["typing_extensions"].split(".")[:2])
    assert (major, minor) >= (4, 16)
    assert "--python-version 3.12" in WHEELS and "--only-binary=:all:" in WHEELS
