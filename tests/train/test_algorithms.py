"""The algorithm protocol: a new algorithm is one class and one registry entry, no loop edit.

``LossCounter`` below is such an algorithm, written here as a user would: it
counts the examples whose loss exceeded a threshold after each step, notes the
accuracy after each evaluation, keeps its count in the resume point and adds
its part to the summary. The loop (datapruning.train.loop) is not touched.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest
from weights_helper import assert_same_weights

import datapruning.train.loop as loop
from datapruning.config import ModelConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.errors import Interrupted
from datapruning.train.algorithms import ALGORITHMS, Algorithm, overriding
from datapruning.train.loop import train

MLP = ModelConfig(name="mlp", params={"hidden": 16})


class LossCounter(Algorithm):
    name = "loss_counter"

    def __init__(self) -> None:
        self.high = 0
        self.steps: list[int] = []
        self.accuracies: list[float] = []

    def after_step(self, result: Any) -> None:
        self.high += int((result.losses > 1.0).sum())
        self.steps.append(result.step)

    def after_eval(self, epoch: int, line: Any) -> None:
        self.accuracies.append(line["test_acc"])

    def state_dict(self) -> dict[str, Any]:
        return {"high": self.high}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.high = state["high"]

    def summarize(self, summary: dict[str, Any]) -> None:
        summary["high_loss_examples"] = self.high


@pytest.fixture
def counters(monkeypatch):
    built: list[LossCounter] = []

    def build(run: Any) -> LossCounter:
        built.append(LossCounter())
        return built[-1]

    monkeypatch.setitem(ALGORITHMS, "loss_counter", build)
    return built


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def cfg(**overrides: Any) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 128, "lr": 0.1, "seed": 0, "targets": [0.5]}
    return TrainConfig(**{**base, **overrides})


def test_a_registered_algorithm_is_called_at_its_events(digits, counters, tmp_path):
    result = train(digits, MLP, cfg(), run_dir=tmp_path, progress=False)
    (counter,) = counters
    steps = result.summary["steps"]
    assert counter.steps == list(range(1, steps + 1))  # after every step, in order
    assert 0 < counter.high <= steps * 128
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert counter.accuracies == [line["test_acc"] for line in lines]
    assert result.summary["high_loss_examples"] == counter.high
    assert json.loads((tmp_path / "summary.json").read_text())["high_loss_examples"] == counter.high


def test_an_algorithm_changes_the_run_key_only_through_its_identity(digits, counters, tmp_path):
    from datapruning.train.run import resolve_run

    plain = resolve_run(digits, MLP, cfg()).config_hash

    class Keyed(LossCounter):
        def identity(self) -> Any:
            return {"threshold": 1.0}

    ALGORITHMS["loss_counter"] = lambda run: Keyed()
    assert resolve_run(digits, MLP, cfg()).config_hash != plain


def test_an_algorithms_state_survives_an_interruption(digits, counters, tmp_path, monkeypatch):
    whole = train(digits, MLP, cfg(), progress=False)
    uninterrupted = counters[-1].high

    class Signalling(loop.TrainStep):
        def __call__(self, x, y, index, step, weights=None):
            if step == 5:
                os.kill(os.getpid(), signal.SIGINT)
            return super().__call__(x, y, index, step, weights)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "TrainStep", Signalling)
        with pytest.raises(Interrupted):
            train(digits, MLP, cfg(), run_dir=tmp_path, progress=False)
    resumed = train(digits, MLP, cfg(), run_dir=tmp_path, progress=False)
    assert resumed.summary["resumed_from_step"] == 5
    assert counters[-1].high == uninterrupted  # restored, then counted on
    assert_same_weights(resumed.model, whole.model)


def test_the_loop_calls_only_the_hooks_an_algorithm_overrides():
    counter = LossCounter()
    assert overriding([counter], "after_step") == [counter]
    assert overriding([counter], "batch") == []
    assert overriding([counter], "epoch_start") == []
