"""bench/kernels.py: one part, run as a script, lands in one JSON with the command and machine."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Runs a bench/ script (in CI too; leave these out with -m 'not bench').
pytestmark = pytest.mark.bench

ROOT = Path(__file__).parents[2]


def test_one_part_writes_json_with_command_and_machine(tmp_path):
    out = tmp_path / "kernels.json"
    # The 2:4 part on CPU only records why it is CUDA-only: the cheapest part to run.
    subprocess.run(
        [sys.executable, "bench/kernels.py", "--quick", "--only", "semi", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    result = json.loads(out.read_text())
    assert result["command"] == f"python bench/kernels.py --quick --only semi --out {out}"
    assert result["device"] == "cpu"
    assert result["machine"]["torch"] and result["machine"]["cores"] >= 1
    assert set(result["parts"]) == {"semi"}
    assert "CUDA-only" in result["parts"]["semi"]["skipped"]
    assert result["parts"]["semi"]["bench_seconds"] >= 0
