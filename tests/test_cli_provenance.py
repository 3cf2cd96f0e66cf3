"""Provenance through select (issue 25, item 6): `datapruning select` leaves OUT.npy.json
beside the indices (scores file, metric, strategy applied, scoring seconds) and says what
auto chose; `datapruning train --indices` (and train.data.indices) charges the scoring."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_helper import assert_one_line_error, run_cli

from datapruning.data.sources import load_dataset
from datapruning.scores import Scores, read_selection, selection_path

SCORING_SECONDS = 12.5
CONFIG = """\
name: provenance
dataset:
  name: digits
model:
  name: mlp
  params:
    hidden: 16
train:
  epochs: 1
  batch_size: 128
  lr: 0.1
"""


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", {})


def _scores(path, dataset, fingerprint=None):
    n = dataset.num_train
    table = pd.DataFrame(
        {"index": np.arange(n), "score": np.linspace(0, 1, n), "label": dataset.y_train}
    )
    metadata = {
        "metric": "el2n",
        "seconds": SCORING_SECONDS,
        "dataset": {
            "name": "digits",
            "fingerprint": fingerprint or dataset.fingerprint,
            "num_classes": 10,
        },
    }
    return Scores(table, metadata).save(path)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_select_writes_a_sidecar_and_says_what_auto_chose(capsys, tmp_path, digits):
    scores = _scores(tmp_path / "s.parquet", digits)
    out = tmp_path / "idx.npy"
    code, stdout, err = run_cli(
        capsys, "select", "--scores", scores, "--keep", 0.3, "--strategy", "auto", "--out", out
    )
    assert code == 0, err
    # 404 kept over 10 classes: fewer than 100 per class, so auto keeps the easiest.
    assert "auto chose easy" in stdout
    record = json.loads(selection_path(out).read_text())
    assert selection_path(out).name == "idx.npy.json"
    assert record["scores"] == str(scores.resolve())
    assert record["metric"] == "el2n"
    assert record["strategy"] == "auto" and record["applied_strategy"] == "easy"
    assert record["scoring_seconds"] == SCORING_SECONDS
    assert record["kept"] == len(np.load(out)) == round(0.3 * digits.num_train)
    assert record["dataset"]["fingerprint"] == digits.fingerprint


def test_train_on_selected_indices_charges_the_scoring(capsys, tmp_path, digits):
    # Before: scoring_seconds 0.0 after select -> train --indices.
    scores = _scores(tmp_path / "s.parquet", digits)
    out = tmp_path / "idx.npy"
    assert run_cli(capsys, "select", "--scores", scores, "--keep", 0.5, "--out", out)[0] == 0
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    code, stdout, err = run_cli(
        capsys, "train", config, "--indices", out, "--out", tmp_path / "run"
    )
    assert code == 0, err
    assert f"charged {SCORING_SECONDS:.1f} s of el2n scoring (hard" in stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["scoring_seconds"] == SCORING_SECONDS
    assert summary["end_to_end_seconds"] == pytest.approx(
        summary["train_seconds"] + SCORING_SECONDS
    )
    assert summary["selection"]["applied_strategy"] == "hard"
    assert summary["selection"]["scores"] == str(scores.resolve())


def test_train_data_indices_in_a_config_charges_the_scoring(capsys, tmp_path, digits):
    scores = _scores(tmp_path / "s.parquet", digits)
    out = tmp_path / "idx.npy"
    assert run_cli(capsys, "select", "--scores", scores, "--keep", 0.5, "--out", out)[0] == 0
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG + f"  data:\n    mode: subset\n    indices: {out}\n")
    code, _, err = run_cli(capsys, "train", config, "--out", tmp_path / "run")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["scoring_seconds"] == SCORING_SECONDS


def test_indices_without_a_sidecar_charge_nothing(capsys, tmp_path, digits):
    out = tmp_path / "idx.npy"
    np.save(out, np.arange(0, digits.num_train, 2))
    assert read_selection(out) is None
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    code, _, err = run_cli(capsys, "train", config, "--indices", out, "--out", tmp_path / "run")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["scoring_seconds"] == 0.0
    assert "selection" not in summary


def test_indices_selected_from_another_datasets_scores_are_refused(capsys, tmp_path, digits):
    scores = _scores(tmp_path / "s.parquet", digits, fingerprint="v2:0ffa")
    out = tmp_path / "idx.npy"
    assert run_cli(capsys, "select", "--scores", scores, "--keep", 0.5, "--out", out)[0] == 0
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    code, _, err = run_cli(capsys, "train", config, "--indices", out, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "v2:0ffa", "idx.npy.json", "select from this dataset")


def test_an_unreadable_sidecar_is_one_line(capsys, tmp_path, digits):
    out = tmp_path / "idx.npy"
    np.save(out, np.arange(10))
    selection_path(out).write_text("{not json")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    code, _, err = run_cli(capsys, "train", config, "--indices", out, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "idx.npy.json", "not a selection record")
