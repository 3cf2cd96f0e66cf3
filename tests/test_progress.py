"""Progress off a terminal: a line per epoch on stderr (issue 25 item 4, problem 1).

tqdm hides its bar when stderr is not a terminal, and ``datapruning score`` then
printed nothing for 11 minutes. Under pytest stderr is captured, not a terminal:
these commands must write one line per epoch there, and nothing with --quiet.
"""

from __future__ import annotations

import re

import pytest
from cli_helper import run_cli

from datapruning import _progress

CONFIG = """\
dataset: {name: digits}
model: {name: mlp, params: {hidden: 16}}
train: {epochs: 3, batch_size: 64, lr: 0.1, eval_every: 2}
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(CONFIG)
    return path


def epoch_lines(err, prefix):
    return [line for line in err if line.startswith(f"{prefix} epoch ")]


def test_the_mode_follows_the_setting_and_the_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert [_progress.mode(p) for p in (None, True, False)] == ["lines", "bar", "off"]
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert [_progress.mode(p) for p in (None, True, False)] == ["bar", "bar", "off"]


def test_train_writes_a_line_per_epoch_off_a_terminal(capsys, config, tmp_path):
    code, _, err = run_cli(capsys, "train", config, "--out", tmp_path / "run")
    assert code == 0
    lines = epoch_lines(err, "train")
    assert len(lines) == 3, err
    assert re.fullmatch(r"train epoch 1/3: loss [\d.]+, [\d.]+ s", lines[0]), lines[0]
    # Evaluated epochs (eval_every 2, and the last) give their test accuracy.
    assert "test acc" not in lines[0] and "test acc" in lines[1] and "test acc" in lines[2]


def test_quiet_writes_no_progress(capsys, config, tmp_path):
    code, _, err = run_cli(capsys, "train", config, "--out", tmp_path / "run", "--quiet")
    assert code == 0 and err == []
    args = ("score", "--config", config, "--seeds", "2", "--epochs", "2", "--quiet")
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "s.parquet")
    assert code == 0 and err == []


@pytest.mark.parametrize(
    ("mode", "prefix", "per_model"),
    [("--batched", "el2n (2 models)", 1), ("--sequential", "train", 2)],
)
def test_score_writes_a_line_per_epoch_and_per_model(
    capsys, config, tmp_path, mode, prefix, per_model
):
    args = ("score", "--config", config, "--seeds", "2", "--epochs", "2", mode)
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "s.parquet")
    assert code == 0
    # The batched ensemble trains both models at once; sequential models one after another.
    assert len(epoch_lines(err, prefix)) == 2 * per_model, err
    done = [line for line in err if line.startswith("el2n: ")]
    assert done[-1].startswith("el2n: 2/2 models (100%"), err
