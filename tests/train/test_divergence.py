"""A run whose training loss stops being a number stops at the epoch's end with one line,
instead of training on (and evaluating, and saving) NaN weights to the last epoch."""

from __future__ import annotations

import pytest
from cli_helper import assert_one_line_error, run_cli

from datapruning.config import ModelConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.errors import DataPruningError
from datapruning.train.loop import RESUME_NAME, SUMMARY_NAME, train

MLP = ModelConfig(name="mlp", params={"hidden": 32})
# The runs made to diverge do not clip their gradients (train.clip_grad_norm, 5 by default,
# turns lr 1000's NaN in epoch 1 into a finite loss that grows: the other check's case).
UNCLIPPED = {"clip_grad_norm": None}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_a_diverging_run_stops_after_its_first_epoch(digits, tmp_path):
    cfg = TrainConfig(epochs=5, batch_size=64, lr=1000.0, targets=[0.5], **UNCLIPPED)
    with pytest.raises(DataPruningError, match=r"loss became nan in epoch 1 .* lower train\.lr"):
        train(digits, MLP, cfg, run_dir=tmp_path, progress=False)
    assert not (tmp_path / SUMMARY_NAME).exists()  # not a finished run
    assert (tmp_path / "metrics.jsonl").read_text() == ""  # NaN weights were not evaluated


def test_its_last_resume_point_is_kept(digits, tmp_path):
    # Diverges in epoch 1; the resume point written at step 10, before its end, stays.
    bad = TrainConfig(
        epochs=5, batch_size=64, lr=1000.0, targets=[0.5], checkpoint_every=10, **UNCLIPPED
    )
    with pytest.raises(DataPruningError, match="is kept"):
        train(digits, MLP, bad, run_dir=tmp_path, progress=False)
    assert (tmp_path / RESUME_NAME).exists()


def test_the_cli_says_it_in_one_line_and_exits_2(capsys, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        "dataset: {name: digits}\nmodel: {name: mlp, params: {hidden: 32}}\n"
        "train: {epochs: 3, batch_size: 64, lr: 1000.0, clip_grad_norm: null}\n"
    )
    code, _, err = run_cli(capsys, "train", config, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "the run diverged", "train.lr (1000)")
    assert not (tmp_path / "run" / SUMMARY_NAME).exists()


def test_a_healthy_run_is_not_stopped(digits):
    summary = train(digits, MLP, TrainConfig(epochs=2, batch_size=64), progress=False).summary
    assert summary["epochs"] == 2 and summary["final_test_acc"] > 0.2  # chance: 0.1


def test_a_run_at_chance_whose_loss_grows_stops(digits, tmp_path):
    # lr 20: finite losses that swing up by orders of magnitude, accuracy at chance.
    cfg = TrainConfig(epochs=6, batch_size=64, lr=20.0, targets=[0.5], **UNCLIPPED)
    with pytest.raises(DataPruningError, match=r"at chance \(.*\) while its training loss grows"):
        train(digits, MLP, cfg, run_dir=tmp_path, progress=False)
    assert not (tmp_path / SUMMARY_NAME).exists()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert 2 <= len(lines) < 6  # stopped early, not after every epoch at chance


def test_a_slow_start_whose_loss_falls_is_not_stopped(digits):
    # lr 2 stays near chance for its first epochs, but its loss falls: no divergence.
    cfg = TrainConfig(epochs=3, batch_size=64, lr=2.0, targets=[0.5], **UNCLIPPED)
    assert train(digits, MLP, cfg, progress=False).summary["epochs"] == 3


def test_a_clipped_run_that_diverges_is_still_stopped(digits, tmp_path):
    # The default clip keeps lr 1000's loss finite; the accuracy check stops it instead.
    cfg = TrainConfig(epochs=5, batch_size=64, lr=1000.0, targets=[0.5])
    assert cfg.clip_grad_norm == 5.0
    with pytest.raises(DataPruningError, match=r"at chance \(.*\) while its training loss grows"):
        train(digits, MLP, cfg, run_dir=tmp_path, progress=False)
    assert not (tmp_path / SUMMARY_NAME).exists()
