"""``datapruning train`` with the loop's options: data modes, KD, step budget, resume.

Bad input prints one line on stderr, exits 2 and leaves the run directory as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helper import assert_one_line_error, run_cli

from datapruning.cli import main
from datapruning.config import load_config
from datapruning.train.checkpoint import load_checkpoint, save_checkpoint
from datapruning.train.loop import RESUME_NAME

CONFIG = """\
dataset:
  name: digits
model:
  name: mlp
  params:
    hidden: 16
train:
  epochs: 2
  batch_size: 64
  lr: 0.1
  targets: [0.5]
kd:
  alpha: 0.5
  temperature: 2.0
"""
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())} if path.exists() else {}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "train.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, config_file):
    out = tmp_path_factory.mktemp("teacher") / "run"
    assert main(["train", str(config_file), "--out", str(out)]) == 0
    return out


def test_train_rs2_with_a_step_budget(capsys, tmp_path, config_file):
    out = tmp_path / "rs2"
    code, stdout, err = run_cli(
        capsys,
        "train",
        config_file,
        "--out",
        out,
        "--set",
        "train.data={mode: rs2, fraction: 0.2}",
        "--set",
        "train.steps=9",
    )
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_mode"] == "rs2"
    assert summary["kept_fraction"] == 0.2
    assert summary["steps"] == 9
    assert "after 9 steps" in stdout


def test_train_with_kd_from_the_config_and_teacher_seconds(capsys, tmp_path, config_file, teacher):
    out = tmp_path / "student"
    code, _, err = run_cli(
        capsys, "train", config_file, "--out", out, "--set", f"kd.teacher={teacher}",
        "--set", "kd.alpha=auto",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    teacher_summary = json.loads((teacher / "summary.json").read_text())
    assert summary["kd"]["alpha_rule"] == "auto"
    assert summary["teacher_seconds"] == teacher_summary["train_seconds"]
    assert summary["end_to_end_seconds"] >= summary["train_seconds"] + summary["teacher_seconds"]


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["kd.alpha=1.5"], ["kd.alpha", "[0, 1]"]),
        (["kd.alpha=-0.1"], ["kd.alpha"]),
        (["kd.temperature=0"], ["kd.temperature", "greater than 0"]),
        (["kd.temperature=-2"], ["kd.temperature"]),
        (["train.steps=3", "train.warmup_epochs=1"], ["warm-up", "train.steps=3"]),
        (["train.data.mode=rs2"], ["train.data", "fraction"]),
        (["train.data.bogus=1"], ["unknown key", "train.data.bogus"]),
        (["train.targets=['0.9r']"], ["train.reference"]),
        (["train.targets=['0.9x']"], ["0.9x"]),
        (["train.data={mode: subset, keep: 0.3}"], ["indices", "scores"]),
    ],
)
def test_bad_loop_settings_exit_2_and_write_nothing(
    capsys, tmp_path, config_file, overrides, fragments
):
    out = tmp_path / "run"
    args = [arg for override in overrides for arg in ("--set", override)]
    code, _, err = run_cli(capsys, "train", config_file, "--out", out, *args)
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()


def test_teacher_with_another_number_of_classes_exits_2(capsys, tmp_path, config_file, teacher):
    from datapruning.models import build_model

    state = load_checkpoint(teacher)
    model = build_model("mlp", tuple(state["input_shape"]), 3, hidden=16)
    bad = save_checkpoint(
        tmp_path / "three.pt", state | {"num_classes": 3, "state_dict": model.state_dict()}
    )
    out = tmp_path / "student"
    code, _, err = run_cli(capsys, "train", config_file, "--teacher", bad, "--out", out)
    assert_one_line_error(code, err, "3 classes")
    assert not out.exists()
    logits = tmp_path / "logits.npy"
    np.save(logits, np.zeros((5, 10), np.float32))
    code, _, err = run_cli(capsys, "train", config_file, "--teacher", logits, "--out", out)
    assert_one_line_error(code, err, "shape")
    assert not out.exists()


def test_resume_checkpoint_from_another_config_exits_2_and_overwrites_nothing(
    capsys, tmp_path, config_file, monkeypatch
):
    import datapruning.train.loop as loop

    out = tmp_path / "run"
    calls = {"n": 0}
    real = loop.evaluate

    def crash_second_evaluation(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # what Ctrl-C mid-run looks like
        return real(*args, **kwargs)

    common = ("--set", "train.checkpoint_every=5", "--set", "train.epochs=3")
    with monkeypatch.context() as patch:
        patch.setattr(loop, "evaluate", crash_second_evaluation)
        code, _, _ = run_cli(capsys, "train", config_file, "--out", out, *common)
    assert code != 0
    assert (out / RESUME_NAME).exists()
    before = snapshot(out)
    code, _, err = run_cli(
        capsys, "train", config_file, "--out", out, *common, "--set", "train.lr=0.2"
    )
    assert_one_line_error(code, err, "different config", RESUME_NAME)
    assert snapshot(out) == before
    # The same command continues the run.
    code, stdout, err = run_cli(capsys, "train", config_file, "--out", out, *common)
    assert code == 0, err
    assert "resumed at step 40" in stdout
    assert not (out / RESUME_NAME).exists()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    load_config(path)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.data={mode: rs2, fraction: 0.1}", "train.data.mode"),
        ("kd.teacher=runs/teacher", "kd.teacher"),
    ],
)
def test_run_refuses_train_only_settings(capsys, tmp_path, override, fragment):
    code, _, err = run_cli(
        capsys, "run", CONFIGS / "quickstart.yaml", "--set", override,
        "--set", f"output_dir={tmp_path}",
    )  # fmt: skip
    assert_one_line_error(code, err, fragment)
    assert not any(tmp_path.iterdir())


def test_teacher_logits_of_another_dataset_are_refused_and_unrecorded_ones_warned(
    capsys, tmp_path, config_file
):
    from datapruning.data.sources import load_dataset
    from datapruning.train.kd import logits_sidecar, save_teacher_logits

    digits = load_dataset("digits", {})
    # Another split of the same images: the same N x C, another dataset.
    other = load_dataset("digits", {"seed": 1})
    assert (other.num_train, other.num_classes) == (digits.num_train, digits.num_classes)
    assert other.fingerprint != digits.fingerprint
    logits = np.random.default_rng(0).normal(size=(digits.num_train, 10)).astype(np.float32)

    theirs = save_teacher_logits(tmp_path / "other.npy", logits, other)
    assert logits_sidecar(theirs).is_file()
    out = tmp_path / "student"
    code, _, err = run_cli(capsys, "train", config_file, "--teacher", theirs, "--out", out)
    assert_one_line_error(code, err, "other.npy", "not this one")
    assert not out.exists()

    ours = save_teacher_logits(tmp_path / "ours.npy", logits, digits)
    code, _, _ = run_cli(capsys, "train", config_file, "--teacher", ours, "--out", out)
    assert code == 0

    logits_sidecar(ours).unlink()  # logits made elsewhere, with no record of their dataset
    with pytest.warns(UserWarning, match="datapruning.save_teacher_logits"):
        code, _, _ = run_cli(
            capsys, "train", config_file, "--teacher", ours, "--out", tmp_path / "again"
        )
    assert code == 0
