"""bench/dynamic.py end to end, small: every recipe per seed, RS2 at InfoBatch's cost, the goal."""

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench" / "dynamic.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH.parent))  # the script imports its sibling provenance.py
    spec = importlib.util.spec_from_file_location("bench_dynamic", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_benchmark_records_each_recipe_and_the_goal(bench, tmp_path):
    out = tmp_path / "dynamic.json"
    argv = ["--samples", "600", "--epochs", "4", "--seeds", "0", "1", "--channels", "8"]
    argv += ["--out", str(out)]
    bench.main(argv)
    report = json.loads(out.read_text())
    assert report["command"] == shlex.join([".venv/bin/python", "bench/dynamic.py", *argv])
    assert report["dataset"]["num_train"] == 480 and report["dataset"]["num_test"] == 120
    assert [(r["recipe"], r["seed"]) for r in report["runs"]] == [
        (recipe, seed) for seed in (0, 1) for recipe in ("full", "infobatch", "online", "rs2")
    ]
    for seed in (0, 1):
        runs = {r["recipe"]: r for r in report["runs"] if r["seed"] == seed}
        # RS2 trains on as many examples as InfoBatch did (its fraction is InfoBatch's).
        fraction = runs["infobatch"]["cost"]["backward_fraction"]
        assert runs["rs2"]["data"]["fraction"] == fraction
        assert runs["rs2"]["cost"]["backward_fraction"] == pytest.approx(fraction, abs=0.01)
        assert runs["full"]["cost"]["backward_fraction"] == 1.0
    for figures in report["recipes"].values():
        low, high = figures["acc_ci95"]
        assert low <= figures["acc_mean"] <= high
    assert report["recipes"]["full"]["train_seconds_vs_full"] == 1.0
    goal = report["goal"]
    assert goal["met"] == (
        goal["infobatch_acc_inside_full_interval"] and goal["infobatch_time_saved"] >= 0.3
    )
