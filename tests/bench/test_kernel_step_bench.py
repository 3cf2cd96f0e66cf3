"""bench/kernel_step.py: a quick CPU run times every step variant of both models (no timing asserts)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

# Runs a bench/ script (in CI too; leave these out with -m 'not bench').
pytestmark = pytest.mark.bench

BENCH = Path(__file__).parents[2] / "bench" / "kernel_step.py"
VARIANTS = {"fp32_torch", "fp32_torch_gmp90", "fused", "fused_gmp90"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernel_step", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_cpu(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("step") / "kernel_step.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_cpu_run_times_every_variant_of_both_models(quick_cpu):
    assert set(quick_cpu["models"]) == {"resnet18", "vit"}
    for name, figures in quick_cpu["models"].items():
        assert set(figures["seconds_per_step"]) == VARIANTS, name
        for variant, seconds in figures["seconds_per_step"].items():
            assert seconds > 0, (name, variant)
            rate = figures["images_per_second"][variant]
            assert rate == pytest.approx(figures["batch"] / seconds, rel=1e-2)
        assert math.isfinite(figures["gmp90_overhead"])
        assert figures["mask_update_seconds"] > 0
        # The masked optimizer kept the pruned weights exactly zero, at the target sparsity.
        assert figures["pruned_weights_exactly_zero"] is True
        assert figures["zeros_in_pruned_layers"] >= quick_cpu["sparsity"]
        assert figures["kd_loss_path"] == "torch reference"
    assert quick_cpu["models"]["resnet18"]["channels_last"] is True
    assert quick_cpu["models"]["vit"]["optimizer"]["fused"] == "MaskedAdamW"


def test_quick_cpu_run_records_the_command_machine_and_why_compile_is_off(quick_cpu):
    assert quick_cpu["command"].startswith("python bench/kernel_step.py --quick")
    assert quick_cpu["machine"]["torch"] and quick_cpu["machine"]["cores"] >= 1
    assert quick_cpu["compile"] is False and "compile" in quick_cpu["cpu_notes"]
    assert quick_cpu["clock"].startswith("process CPU time")
