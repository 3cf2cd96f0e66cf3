"""bench/loaders.py end to end on a few hundred images."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ffcv")

# Runs a bench/ script (in CI too; leave these out with -m 'not bench').
pytestmark = pytest.mark.bench

BENCH = Path(__file__).parents[2] / "bench" / "loaders.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_loaders", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_images_are_structured_uint8(bench):
    images, labels = bench.make_images(50, seed=3)
    assert images.shape == (50, 3, 32, 32) and images.dtype == np.uint8
    assert set(labels.tolist()) <= set(range(10))
    assert np.array_equal(images, bench.make_images(50, seed=3)[0])
    assert images.std() > 10  # not blank


@pytest.mark.slow
def test_benchmark_writes_rates_and_ratios(bench, tmp_path):
    out = tmp_path / "loaders.json"
    argv = ["--images", "300", "--subset", "200", "--batch-size", "64"]
    argv += ["--workers", "1", "--epochs", "1", "--out", str(out)]
    report = bench.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    rates = report["examples_per_second"]
    assert set(rates) == {"ffcv", "torch_png", "torch_memory", "memory_batches"}
    assert all(rate > 0 for rate in rates.values())
    details = report["details"]
    assert report["ratio_ffcv_to_torch_png"] == pytest.approx(
        details["ffcv"]["examples_per_second"] / details["torch_png"]["examples_per_second"]
    )
    assert report["settings"]["subset"] == 200
    assert report["command"].endswith("--out " + str(out))
    assert report["versions"]["ffcv"] == "1.0.2"
