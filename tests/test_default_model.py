"""The default image model is sized for the run's device (issue 25 item 4, problem 1).

ResNet-18 at width 64 took 6 s a step of 100 CIFAR-sized images on one core of the
2-core machine, so an image npz scored with the default model ran 11 minutes without
an epoch done. On a CPU the default is width 8 (about 2 minutes an epoch of 50,000
such images); on CUDA the full width. The width is part of what runs and scores record.
"""

from __future__ import annotations

import numpy as np
import pytest

from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
from datapruning.data.sources import (
    IMAGE_WIDTH_ACCELERATOR,
    IMAGE_WIDTH_CPU,
    default_model_params,
    load_dataset,
)
from datapruning.scoring import score
from datapruning.train.checkpoint import load_checkpoint
from datapruning.train.loop import train
from datapruning.user import resolve_model


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A CIFAR-shaped npz, small: 60 RGB images of 8x8 in 3 classes."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("npz") / "images.npz"
    y = np.arange(60) % 3
    np.savez(path, x=rng.integers(0, 256, (60, 3, 8, 8), dtype=np.uint8), y=y)
    return load_dataset(f"npz:{path}")


def test_the_width_depends_on_the_device_named_not_the_hardware():
    assert IMAGE_WIDTH_CPU == 8 and IMAGE_WIDTH_ACCELERATOR == 64
    assert default_model_params("resnet18", "cpu") == {"width": 8}
    # Resolved from the config's device string: no GPU is needed to say what cuda gets.
    assert default_model_params("resnet18", "cuda") == {"width": 64}
    assert default_model_params("resnet18", "cuda:1") == {"width": 64}
    assert default_model_params("mlp", "cpu") == {}
    assert default_model_params("convnet1d", "cuda") == {}


def test_resolve_model_fills_in_the_default_at_the_devices_width(images):
    assert images.default_model == "resnet18"
    on_cpu = resolve_model(ModelConfig(), images, "cpu")
    assert on_cpu == ModelConfig(name="resnet18", params={"width": 8})
    assert resolve_model(ModelConfig(), images, "cuda").params == {"width": 64}
    # The config's own params win; a named model is the user's choice, at its own default.
    assert resolve_model(ModelConfig(params={"width": 16}), images, "cpu").params == {"width": 16}
    named = ModelConfig(name="resnet18")
    assert resolve_model(named, images, "cpu") is named


def test_a_run_and_its_scores_record_the_width_they_trained(images, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=20)
    result = train(images, ModelConfig(), cfg, run_dir=tmp_path / "run", progress=False)
    assert result.summary["config"]["model"] == {"name": "resnet18", "params": {"width": 8}}
    assert result.model.stem[0].out_channels == 8
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["model_params"] == {"width": 8}

    scoring = ScoringConfig(seeds=1, epochs=1)
    scores = score(images, "el2n", scoring, train=cfg, progress=False)
    assert scores.metadata["model"] == {"name": "resnet18", "params": {"width": 8}}
