"""bench/scoring.py end to end, small."""

import importlib.util
import json
import shlex
from pathlib import Path

import pytest

# Runs a bench/ script (in CI too; leave these out with -m 'not bench').
pytestmark = pytest.mark.bench

BENCH = Path(__file__).parents[2] / "bench" / "scoring.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scoring", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_benchmark_writes_timings_and_ratios(bench, tmp_path):
    out = tmp_path / "scoring.json"
    argv = ["--n", "3000", "--dim", "16", "--k", "10", "--repeats", "1"]
    argv += ["--seeds", "2", "--epochs", "1", "--el2n-repeats", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    kmeans = report["kmeans"]
    assert kmeans["k"] == 10 and len(kmeans["runs"]) == 1
    for name in ("faiss", "faiss_kmeanspp"):
        assert kmeans[name]["speedup_over_sklearn"] > 0
    el2n = report["el2n"]
    assert {"sequential_1_thread", "batched_1_thread"} <= set(el2n["runs"])
    assert el2n["speedup_batched_1_thread"] > 0
    assert el2n["default_threads"]["sequential"] == "sequential_1_thread"
    assert el2n["speedup_with_default_threads"] > 0
    assert el2n["max_abs_score_difference_batched_vs_sequential"] < 0.05
    assert -1 <= report["proto_vs_el2n"]["spearman_proto_vs_el2n"] <= 1
    # The command is the one main() parsed (pytest's sys.argv would not reproduce it).
    assert report["command"] == shlex.join([".venv/bin/python", "bench/scoring.py", *argv])
    assert report["machine"]["cpus"] and report["versions"]["torch"]
