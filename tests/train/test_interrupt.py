"""SIGINT/SIGTERM in process: the loop stops at a step boundary with a resume point.

The signals are sent by the process to itself from inside a step, so they land
at a known step; tests/test_crash_resume.py sends them (and SIGKILL) from
outside at random moments.
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
from cli_helper import run_cli
from weights_helper import assert_same_weights

import datapruning.train.loop as loop
from datapruning._interrupt import deferred_stop, immediate_stop
from datapruning.config import ModelConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.errors import Interrupted
from datapruning.scoring._common import SeedStore
from datapruning.train.loop import RESUME_NAME, train

MLP = ModelConfig(name="mlp", params={"hidden": 16})


def cfg(**overrides):
    base = {"epochs": 3, "batch_size": 128, "lr": 0.1, "seed": 0, "targets": [0.5]}
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def whole(digits, tmp_path_factory):
    return train(digits, MLP, cfg(), run_dir=tmp_path_factory.mktemp("whole"), progress=False)


def signal_at_step(monkeypatch, at: int, *signals: int) -> None:
    """Send ``signals`` to this process inside step ``at`` (numbered from 1)."""

    class Signalling(loop.TrainStep):
        def __call__(self, x, y, index, step, weights=None):
            if step == at:
                for signum in signals:
                    os.kill(os.getpid(), signum)
            return super().__call__(x, y, index, step, weights)

    monkeypatch.setattr(loop, "TrainStep", Signalling)


# 11 steps an epoch (1347 examples, batches of 128): step 5 is mid-epoch, 11 an epoch's last.
@pytest.mark.parametrize(("at", "saved_at"), [(5, 5), (11, 11)], ids=["mid-epoch", "epoch-end"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_at_the_step_boundary_with_a_resume_point_without_checkpoint_every(
    digits, whole, tmp_path, monkeypatch, signum, at, saved_at
):
    before = [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)]
    with monkeypatch.context() as patch:
        signal_at_step(patch, at, signum)
        with pytest.raises(Interrupted) as caught:
            train(digits, MLP, cfg(), run_dir=tmp_path, progress=False)
    assert caught.value.signum == signum and caught.value.exit_code == 128 + signum
    assert f"resume point at step {saved_at} of 33 written to" in str(caught.value)
    assert (tmp_path / RESUME_NAME).is_file() and not (tmp_path / "summary.json").exists()
    # The handlers are the caller's again.
    assert [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)] == before
    resumed = train(digits, MLP, cfg(), run_dir=tmp_path, progress=False)
    assert resumed.summary["resumed_from_step"] == saved_at
    assert_same_weights(whole.model, resumed.model)
    lines = (tmp_path / "metrics.jsonl").read_text()
    assert lines.count("\n") == 3  # one line per epoch, none twice


def test_a_signal_at_the_last_step_lets_the_run_finish(digits, whole, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        signal_at_step(patch, 33, signal.SIGTERM)
        result = train(digits, MLP, cfg(), run_dir=tmp_path, progress=False)
    assert (tmp_path / "summary.json").is_file() and not (tmp_path / RESUME_NAME).exists()
    assert_same_weights(whole.model, result.model)


def test_a_second_sigint_stops_at_once(digits, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        signal_at_step(patch, 5, signal.SIGINT, signal.SIGINT)
        with pytest.raises(Interrupted, match="stopped at once"):
            train(digits, MLP, cfg(), run_dir=tmp_path, progress=False)
    assert not (tmp_path / RESUME_NAME).exists()  # no periodic resume point yet


def test_without_a_run_dir_nothing_is_saved(digits, monkeypatch):
    with monkeypatch.context() as patch:
        signal_at_step(patch, 5, signal.SIGINT)
        with pytest.raises(Interrupted, match="stopped at step 5, nothing saved"):
            train(digits, MLP, cfg(), progress=False)


def test_the_cli_prints_one_line_with_the_command_and_exits_130(
    capsys, tmp_path, monkeypatch, whole
):
    config = tmp_path / "train.yaml"
    config.write_text(
        "dataset: {name: digits}\nmodel: {name: mlp, params: {hidden: 16}}\n"
        "train: {epochs: 3, batch_size: 128, lr: 0.1, targets: [0.5]}\n"
    )
    out = tmp_path / "my run"
    with monkeypatch.context() as patch:
        signal_at_step(patch, 7, signal.SIGINT)
        code, stdout, err = run_cli(capsys, "train", config, "--out", out)
    assert code == 130 and stdout == ""
    assert err == [
        f"interrupted by SIGINT: resume point at step 7 of 33 written to "
        f"{str(out / RESUME_NAME)!r}; to continue, run: datapruning train {config} "
        f"--out '{out}'"
    ]
    code, stdout, _ = run_cli(capsys, "train", config, "--out", out)
    assert code == 0 and "(resumed at step 7)" in stdout


def test_scoring_stops_at_once_and_keeps_the_finished_seeds(tmp_path):
    store = SeedStore(tmp_path, {"metric": "test"})
    computed = []

    def compute(chunk):
        computed.extend(chunk)
        if chunk == [2]:
            os.kill(os.getpid(), signal.SIGTERM)
        return np.full((len(chunk), 4), float(chunk[0]))

    with pytest.raises(Interrupted, match=f"2 of 4 seeds saved in {str(tmp_path)!r}") as caught:
        store.run([0, 1, 2, 3], 4, 1, compute, "test", progress=False)
    assert caught.value.exit_code == 143
    assert store.load([0, 1, 2, 3], 4).keys() == {0, 1}
    computed.clear()
    done = store.run([0, 1, 2, 3], 4, 1, lambda chunk: np.full((len(chunk), 4), 9.0), "t", False)
    assert store.reused == [0, 1] and sorted(done) == [0, 1, 2, 3]
    assert done[0][0][0] == 0.0 and done[2][0][0] == 9.0


def test_handlers_are_left_alone_outside_the_main_thread():
    seen = []

    def probe():
        with deferred_stop(), immediate_stop():
            seen.append(signal.getsignal(signal.SIGINT))

    main_thread_handler = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert seen == [main_thread_handler]


def test_a_rerun_removes_what_a_kill_mid_write_left(digits, tmp_path):
    # A SIGKILL inside atomic_path leaves its temporary; the next run of the dir removes it.
    stale = [tmp_path / f".{name}.k1ll3d.tmp" for name in (RESUME_NAME, "metrics.jsonl")]
    for path in stale:
        path.write_bytes(b"half")
    other = tmp_path / ".notes.txt.k1ll3d.tmp"  # not the loop's: left alone
    other.write_bytes(b"mine")
    train(digits, MLP, cfg(epochs=1), run_dir=tmp_path, progress=False)
    assert not any(path.exists() for path in stale)
    assert other.read_bytes() == b"mine"
