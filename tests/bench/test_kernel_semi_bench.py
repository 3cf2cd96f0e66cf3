"""bench/kernel_semi.py: on CPU it records that the 2:4 path is CUDA-only and measures nothing."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

# Runs a bench/ script (in CI too; leave these out with -m 'not bench').
pytestmark = pytest.mark.bench

BENCH = Path(__file__).parents[2] / "bench" / "kernel_semi.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernel_semi", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_run_says_why_it_skipped(bench):
    result = bench.run("cpu")
    assert "CUDA-only" in result["skipped"]
    assert "ms_fwd_bwd" not in result
    assert result["shapes"] == {"tokens": 8192, "dim": 1024, "hidden": 4096, "dtype": "bfloat16"}
    assert result["machine"]["torch"]


def test_main_writes_the_command_and_the_result(bench, tmp_path, monkeypatch):
    out = tmp_path / "kernel_semi.json"
    monkeypatch.setattr(sys, "argv", ["kernel_semi.py", "--device", "cpu", "--results", str(out)])
    bench.main()
    written = json.loads(out.read_text())
    assert written["command"].endswith(f"--device cpu --results {out}")
    assert "CUDA-only" in written["skipped"]


@pytest.mark.cuda
def test_quick_gpu_run_measures_all_three_paths(bench):
    result = bench.run("cuda", quick=True)
    if "skipped" in result:
        pytest.skip(result["skipped"])
    for figures in result["ms_fwd_bwd"].values():
        assert figures["dense"] > 0 and figures["semi_structured"] > 0
    assert result["max_abs_err_vs_dense_masked"] <= 0.05 * result["ref_max_abs"]
