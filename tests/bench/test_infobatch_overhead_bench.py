"""bench/infobatch_overhead.py end to end, tiny: every part timed, the loop pairs compared."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

# Runs a bench/ script (in CI too; leave these out with -m 'not bench').
pytestmark = pytest.mark.bench

BENCH = Path(__file__).parents[2] / "bench" / "infobatch_overhead.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH.parent))  # the script imports its sibling provenance.py
    spec = importlib.util.spec_from_file_location("bench_infobatch_overhead", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_benchmark_times_the_parts_and_the_loops(bench, tmp_path):
    out = tmp_path / "overhead.json"
    argv = ["--num-train", "500", "--channels", "4", "--reps", "2", "--steps-per-rep", "3"]
    argv += ["--loop-samples", "500", "--loop-epochs", "2", "--loop-reps", "1", "--note", "tiny"]
    bench.main([*argv, "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["note"] == "tiny" and report["library"].endswith("datapruning")
    assert set(report["per_step_us"]) == {
        "step_plain", "step_infobatch", "weights", "update", "reduce_plain", "reduce_weighted",
    }  # fmt: skip
    assert all(us > 0 for us in report["per_step_us"].values())
    assert report["set_epoch_ms"] > 0
    loop = report["loop"]
    assert set(loop["cpu_ms_per_step"]) == {"full", "infobatch_prune0", "infobatch", "rs2"}
    # InfoBatch at prune 0 takes full data's examples in full data's order.
    assert loop["runs"]["infobatch_prune0"]["steps"] == loop["runs"]["full"]["steps"]
    assert loop["runs"]["infobatch_prune0"]["final_test_acc"] == pytest.approx(
        loop["runs"]["full"]["final_test_acc"], abs=0.02
    )
    # RS2 at InfoBatch's measured fraction: as many steps, give or take rounding.
    assert abs(loop["runs"]["rs2"]["steps"] - loop["runs"]["infobatch"]["steps"]) <= 2
