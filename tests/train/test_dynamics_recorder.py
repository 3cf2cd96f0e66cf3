"""Training dynamics recorded by a run (train.record): forgetting, AUM and EL2N as scores files.

The recorder's counts are checked against plain implementations of each
definition over the same forward passes (captured by a second algorithm), its
files against `datapruning select`, and its state against an interrupted and
resumed run.
"""

from __future__ import annotations

import itertools
import os
import signal
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helper import run_cli
from weights_helper import assert_same_weights

import datapruning.train.loop as loop
from datapruning.config import ModelConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.errors import DataPruningError, Interrupted
from datapruning.scores import Scores
from datapruning.train.algorithms import ALGORITHMS, Algorithm
from datapruning.train.loop import train

MLP = ModelConfig(name="mlp", params={"hidden": 32})
RECORD = {"forgetting": True, "aum": True, "el2n_epochs": [2, 4]}


def cfg(**overrides: Any) -> TrainConfig:
    base = {"epochs": 4, "batch_size": 128, "lr": 0.1, "seed": 0, "targets": [0.5]}
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


class Capture(Algorithm):
    """Every step's (index, logits, labels), as the step's forward pass saw them."""

    name = "capture"

    def __init__(self) -> None:
        self.steps: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def after_step(self, result: Any) -> None:
        self.steps.append(
            (
                result.step,
                result.index.numpy().copy(),
                result.logits.float().numpy().copy(),
                result.targets.numpy().copy(),
            )
        )


@pytest.fixture
def recorded(digits, tmp_path, monkeypatch):
    capture = Capture()
    monkeypatch.setitem(ALGORITHMS, "capture", lambda run: capture)
    result = train(digits, MLP, cfg(record=RECORD), run_dir=tmp_path, progress=False)
    return result, capture, tmp_path


def load(run_dir, metric):
    return Scores.load(run_dir / f"scores-{metric}.parquet")


def test_forgetting_matches_tonevas_definition_counted_by_hand(digits, recorded):
    result, capture, run_dir = recorded
    history: dict[int, list[tuple[int, bool]]] = {}
    for step, index, logits, labels in capture.steps:
        for i, row, label in zip(index, logits, labels, strict=True):
            history.setdefault(int(i), []).append((step, bool(row.argmax() == label)))
    epochs = result.summary["epochs"]
    scores = load(run_dir, "forgetting").table.set_index("index")
    for i in range(digits.num_train):
        presentations = history[i]
        events = sum(a and not b for (_, a), (_, b) in itertools.pairwise(presentations))
        learned = [step for step, right in presentations if right]
        want = float(events) if learned else float(epochs + 1)
        assert scores.loc[i, "score"] == want, i
        assert scores.loc[i, "first_learned_step"] == (learned[0] if learned else -1)
        assert scores.loc[i, "presentations"] == len(presentations) == epochs


def test_aum_is_the_mean_margin_over_the_forward_passes(digits, recorded):
    _, capture, run_dir = recorded
    margins: dict[int, list[float]] = {}
    for _, index, logits, labels in capture.steps:
        for i, row, label in zip(index, logits, labels, strict=True):
            others = np.delete(row, label)
            margins.setdefault(int(i), []).append(float(row[label]) - float(others.max()))
    table = load(run_dir, "aum").table.set_index("index")
    want = np.array([np.mean(margins[i]) for i in range(digits.num_train)])
    np.testing.assert_allclose(table["aum"].to_numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(table["score"].to_numpy(), -table["aum"].to_numpy())


def test_el2n_averages_eval_passes_after_the_chosen_epochs(digits, recorded):
    result, _, run_dir = recorded
    scores = load(run_dir, "el2n")
    assert scores.metadata["params"]["after_epochs"] == [2, 4]
    # The pass after epoch 4 is the final model's: recompute it by hand.
    model = result.model.eval()
    with torch.no_grad():
        probs = model(torch.as_tensor(digits.x_train)).softmax(dim=1)
    onehot = F.one_hot(torch.as_tensor(digits.y_train).long(), probs.shape[1])
    final = (probs - onehot).norm(dim=1).double().numpy()
    assert np.all(scores.values >= 0) and np.all(scores.values <= np.sqrt(2))
    assert not np.allclose(scores.values, final)  # the mean of two passes, not the last alone
    assert np.corrcoef(scores.values, final)[0, 1] > 0.8


def test_recording_changes_no_weight_and_records_its_cost(digits, recorded):
    result, _, run_dir = recorded
    plain = train(digits, MLP, cfg(), progress=False)
    assert_same_weights(result.model, plain.model)
    dynamics = result.summary["dynamics"]
    assert dynamics["recorded"] == ["forgetting", "aum", "el2n"]
    assert dynamics["seconds_in_training"] > 0 and dynamics["seconds_outside_training"] > 0
    assert sorted(p.name for p in run_dir.glob("scores-*.parquet")) == sorted(dynamics["files"])
    meta = load(run_dir, "forgetting").metadata
    assert meta["dataset"]["fingerprint"] == digits.fingerprint
    assert meta["seeds"] == [0] and meta["params"]["source"] == "run"
    assert meta["run"]["dir"] == str(run_dir) and meta["run"]["config_hash"]


def test_datapruning_select_reads_a_recorded_file(capsys, recorded, tmp_path):
    _, _, run_dir = recorded
    out = tmp_path / "kept.npy"
    argv = ["select", "--scores", run_dir / "scores-forgetting.parquet", "--keep", "0.3"]
    code, _, _ = run_cli(capsys, *argv, "--out", out)
    assert code == 0 and len(np.load(out)) == round(0.3 * len(load(run_dir, "forgetting")))


def test_a_resumed_run_records_the_same_statistics(digits, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    train(digits, MLP, cfg(record=RECORD), run_dir=whole, progress=False)

    class Signalling(loop.TrainStep):
        def __call__(self, x, y, index, step, weights=None):
            if step == 15:  # mid-epoch 2, before the first EL2N pass
                os.kill(os.getpid(), signal.SIGINT)
            return super().__call__(x, y, index, step, weights)

    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        patch.setattr(loop, "TrainStep", Signalling)
        with pytest.raises(Interrupted):
            train(digits, MLP, cfg(record=RECORD), run_dir=cut, progress=False)
    resumed = train(digits, MLP, cfg(record=RECORD), run_dir=cut, progress=False)
    assert resumed.summary["resumed_from_step"] == 15
    for metric in ("forgetting", "aum", "el2n"):
        a, b = load(whole, metric).table, load(cut, metric).table
        assert a.equals(b), metric


@pytest.mark.parametrize("data", [{"mode": "rs2", "fraction": 0.5}, {"mode": "infobatch"}])
def test_counts_need_every_presentation(digits, data):
    with pytest.raises(DataPruningError, match="counts every presentation"):
        train(digits, MLP, cfg(record={"forgetting": True}, data=data), progress=False)
    # EL2N passes over the whole set whatever the run trains on.
    result = train(digits, MLP, cfg(record={"el2n_epochs": [4]}, data=data), progress=False)
    assert result.summary["dynamics"]["recorded"] == ["el2n"]


def test_el2n_after_the_last_epoch_is_refused(digits):
    with pytest.raises(DataPruningError, match="after the run's last epoch 4"):
        train(digits, MLP, cfg(record={"el2n_epochs": [9]}), progress=False)
