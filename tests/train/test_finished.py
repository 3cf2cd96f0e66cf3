"""A finished run in ``--out`` is kept: reported when asked for again, refused or replaced
(``--force``) when the settings differ; settings that compute nothing do not count."""

from __future__ import annotations

import json

import pytest
from cli_helper import assert_one_line_error, run_cli

from datapruning.train.run import NOT_COMPUTING


@pytest.fixture
def finished(capsys, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        "dataset: {name: digits}\nmodel: {name: mlp, params: {hidden: 8}}\n"
        "train: {epochs: 1, batch_size: 128, targets: [0.5]}\n"
    )
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, "train", config, "--out", out)
    assert code == 0
    return config, out


def files(out):
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_the_same_run_again_is_reported_and_kept(capsys, finished):
    config, out = finished
    before = files(out)
    code, stdout, _ = run_cli(capsys, "train", config, "--out", out)
    assert code == 0 and "nothing retrained" in stdout
    assert files(out) == before


@pytest.mark.parametrize("setting", ["train.workers=2", "train.checkpoint_every=5"])
def test_settings_that_compute_nothing_reuse_the_finished_run(capsys, finished, setting):
    config, out = finished
    assert setting.split("=")[0].removeprefix("train.") in NOT_COMPUTING
    before = files(out)
    code, stdout, _ = run_cli(capsys, "train", config, "--out", out, "--set", setting)
    assert code == 0 and "nothing retrained" in stdout
    assert files(out) == before


def test_other_settings_are_refused_naming_the_first_difference(capsys, finished):
    config, out = finished
    before = files(out)
    code, _, err = run_cli(capsys, "train", config, "--out", out, "--set", "train.lr=0.01")
    assert_one_line_error(code, err, str(out), "train.lr is 0.05 there, 0.01 here", "--force")
    assert files(out) == before  # nothing written, the finished run intact


def test_force_replaces_it_and_says_what_it_replaces(capsys, finished):
    config, out = finished
    code, _, err = run_cli(
        capsys, "train", config, "--out", out, "--set", "train.lr=0.01", "--force"
    )
    assert code == 0
    assert any("replacing the finished run" in line and "train.lr" in line for line in err)
    assert json.loads((out / "summary.json").read_text())["config"]["train"]["lr"] == 0.01
