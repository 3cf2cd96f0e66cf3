"""bench/dynamic.py end to end, small: every recipe per seed with and without KD, RS2 at
InfoBatch's cost, the goal per KD setting."""

import importlib.util
import itertools
import json
import shlex
import sys
from pathlib import Path

import pytest

# Runs a bench/ script (in CI too; leave these out with -m 'not bench').
pytestmark = pytest.mark.bench

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
    recipes = ("full", "infobatch", "online", "online_proxy", "rs2")
    assert [(r["recipe"], r["kd"], r["seed"]) for r in report["runs"]] == [
        (recipe, kd, seed) for seed in (0, 1) for kd in (True, False) for recipe in recipes
    ]
    for seed, kd in itertools.product((0, 1), (True, False)):
        runs = {r["recipe"]: r for r in report["runs"] if r["seed"] == seed and r["kd"] == kd}
        # RS2 trains on as many examples as InfoBatch did (its fraction is InfoBatch's).
        fraction = runs["infobatch"]["cost"]["backward_fraction"]
        assert runs["rs2"]["data"]["fraction"] == fraction
        assert runs["rs2"]["cost"]["backward_fraction"] == pytest.approx(fraction, abs=0.01)
        assert runs["full"]["cost"]["backward_fraction"] == 1.0
        # The proxy scored: the student forwarded only what it trained on.
        proxy = runs["online_proxy"]["cost"]
        assert proxy["proxy"]["params"] == {"channels": 4}
        assert proxy["forward_fraction"] == proxy["backward_fraction"] == pytest.approx(0.5, 0.05)
        assert runs["online"]["cost"]["forward_fraction"] == pytest.approx(1.5, 0.05)
        assert all(r["cpu_seconds"] > 0 for r in runs.values())
    assert set(report["recipes"]) == {
        f"{recipe}{suffix}" for recipe in recipes for suffix in ("+kd", "")
    }
    for figures in report["recipes"].values():
        low, high = figures["acc_ci95"]
        assert low <= figures["acc_mean"] <= high
    assert report["recipes"]["full+kd"]["train_seconds_vs_full"] == 1.0
    assert report["recipes"]["full"]["cpu_seconds_vs_full"] == 1.0
    for setting in ("kd", "no_kd"):
        goal = report["goal"][setting]
        assert goal["met"] == (
            goal["infobatch_acc_inside_full_interval"] and goal["infobatch_time_saved"] >= 0.3
        )


@pytest.mark.slow
def test_benchmark_runs_one_kd_setting_alone(bench, tmp_path):
    out = tmp_path / "dynamic.json"
    argv = ["--samples", "400", "--epochs", "2", "--seeds", "0", "--channels", "4", "--kd", "off"]
    report = bench.main([*argv, "--out", str(out)])
    assert report["teacher"] is None and report["train"]["kd_settings"] == [False]
    assert {r["kd"] for r in report["runs"]} == {False} and set(report["goal"]) == {
        "statement",
        "no_kd",
    }
