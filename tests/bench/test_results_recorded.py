"""Every committed bench result says how to regenerate it, where it ran, and with what.

A figure in the README or docs/ must come from a ``bench/results/*.json`` that
records the ``command`` (a script that exists in this repository), the machine
(its number of cores) and the versions (Python and torch) that produced it.
Files whose figures were measured before the command was recorded say so in
``provenance_note`` and still carry all three.
"""

import json
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULTS = sorted((REPO / "bench" / "results").glob("*.json"))


def test_there_are_results_to_check():
    assert len(RESULTS) >= 7


def script_of(command: str) -> Path:
    """The script a recorded command runs: ``python X.py ...`` or ``python -m pkg.mod ...``."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word.endswith(".py"):
            return REPO / word
        if word == "-m" and i + 1 < len(words):
            return REPO / (words[i + 1].replace(".", "/") + ".py")
    raise AssertionError(f"command {command!r} names no .py script or -m module")


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_result_records_command_machine_and_versions(path):
    record = json.loads(path.read_text())
    commands = [record.get("command")]
    assert isinstance(commands[0], str) and commands[0], f"{path.name}: no command"
    commands += record.get("commands", [])  # a result built in several steps lists them all
    for command in commands:
        script = script_of(command)
        assert script.is_file(), f"{path.name}: {command!r} runs {script}, which does not exist"
    # Machine and versions: `machine` + `versions`, or one `environment` (or `machine`)
    # holding both.
    machine = {**record.get("environment", {}), **record.get("machine", {})}
    versions = {**machine, **record.get("versions", {})}
    assert any(machine.get(key) for key in ("cpus", "cpu_count", "cores")), (
        f"{path.name}: no machine record (its number of cores)"
    )
    for package in ("python", "torch"):
        assert versions.get(package), f"{path.name}: no {package} version"


def test_script_of_reads_both_command_forms():
    assert script_of(".venv/bin/python bench/scoring.py --n 10") == REPO / "bench/scoring.py"
    assert script_of("python -m bench.kernels --out x") == REPO / "bench/kernels.py"
    with pytest.raises(AssertionError, match="names no"):
        script_of("datapruning run configs/quickstart.yaml")


def test_provenance_records_the_arguments_main_parsed(monkeypatch):
    from provenance import provenance

    monkeypatch.setattr("sys.argv", ["pytest", "-k", "something"])
    record = provenance(REPO / "bench" / "label_flip.py", ["--flip", "0.2", "--out", "a b.json"])
    assert record["command"] == ".venv/bin/python bench/label_flip.py --flip 0.2 --out 'a b.json'"
    # Run as a script (argv None), it is the script's own arguments.
    assert provenance(REPO / "bench" / "label_flip.py", None)["command"].endswith(
        "label_flip.py -k something"
    )
    assert record["machine"]["cpus"] >= 1
    assert record["versions"]["python"] and record["versions"]["torch"]
