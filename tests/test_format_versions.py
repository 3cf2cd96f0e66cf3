"""Every file the project writes and reads back records its format version.

summary.json, resume.pt and checkpoint.pt carry ``format_version``; scores
files, beton sidecars and teacher-logits sidecars carry theirs (their own tests
check the scores and beton cases; the logits sidecar's is here). A file of an
unknown, older or unrecorded version is refused with one line naming the file,
the version found and what to do; the CLI exits 2 and leaves the run as it was.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helper import assert_one_line_error, run_cli
from runs_helper import write_run

from datapruning._io import check_format_version
from datapruning.config import ModelConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.errors import DataPruningError
from datapruning.pipeline.keys import reusable_summary
from datapruning.report import find_runs
from datapruning.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from datapruning.train.kd import logits_sidecar, save_teacher_logits, teacher_logits
from datapruning.train.loop import SUMMARY_FORMAT, train
from datapruning.train.state import RESUME_FORMAT, RESUME_NAME, TrainState
from datapruning.train.tta import reference_accuracy


# Each wrong version and the words its message must hold.
def wrong_versions(current: int) -> list[tuple]:
    """Versions a reader of format ``current`` refuses, with the words its message has."""
    return [
        (None, "has no format version (an older datapruning wrote it"),
        (current - 1, f"format version {current - 1}, older than the {current}"),
        (
            current + 1,
            f"format version {current + 1}, newer than the {current} this datapruning reads; "
            "upgrade datapruning",
        ),
        ("1", "unknown format version '1'"),
        (True, "unknown format version True"),
    ]


WRONG_VERSIONS = wrong_versions(1)
WRONG_IDS = ["missing", "older", "newer", "string", "bool"]


def with_version(record: dict, version) -> dict:
    record = {k: v for k, v in record.items() if k != "format_version"}
    return record if version is None else record | {"format_version": version}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def finished_run(digits, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.1, targets=[0.5])
    train(digits, ModelConfig(name="mlp", params={"hidden": 8}), cfg, run_dir=run_dir)
    return run_dir


@pytest.mark.parametrize(("version", "words"), WRONG_VERSIONS, ids=WRONG_IDS)
def test_check_format_version_names_the_file_the_version_and_the_fix(tmp_path, version, words):
    check_format_version(tmp_path / "f.json", 1, 1, "do X")  # the version it reads: fine
    with pytest.raises(DataPruningError) as caught:
        check_format_version(tmp_path / "f.json", version, 1, "do X")
    message = str(caught.value)
    assert str(tmp_path / "f.json") in message and words in message and "do X" in message
    assert "\n" not in message


def test_a_finished_run_records_its_formats(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["format_version"] == SUMMARY_FORMAT == 2
    assert load_checkpoint(finished_run)["format_version"] == CHECKPOINT_FORMAT == 1


@pytest.mark.parametrize(("version", "words"), wrong_versions(SUMMARY_FORMAT), ids=WRONG_IDS)
def test_summary_of_another_version_is_refused_by_report_and_reference(tmp_path, version, words):
    run = write_run(tmp_path, "full-s0", [(1.0, 0.9)], recipe="full")
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text())
    assert find_runs(tmp_path)[0].summary["format_version"] == SUMMARY_FORMAT
    summary_path.write_text(json.dumps(with_version(summary, version)))
    for read in (lambda: find_runs(tmp_path), lambda: reference_accuracy(run)):
        with pytest.raises(DataPruningError, match=r"summary\.json") as caught:
            read()
        assert words in str(caught.value)
        assert "train the run again" in str(caught.value)


def test_report_cli_refuses_an_old_summary_in_one_line(capsys, tmp_path):
    run = write_run(tmp_path, "full-s0", [(1.0, 0.9)], recipe="full")
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(with_version(summary, None)))
    code, _, err = run_cli(capsys, "report", tmp_path)
    assert_one_line_error(code, err, str(run / "summary.json"), "no format version")
    assert not (tmp_path / "report.md").exists()


def test_orchestration_trains_again_instead_of_reusing_an_old_summary(tmp_path, finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    run_dir = tmp_path / "cell"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes((finished_run / "checkpoint.pt").read_bytes())
    (run_dir / "summary.json").write_text(json.dumps(summary | {"run_key": "k"}))
    assert reusable_summary(run_dir, "k") is not None
    for version in (None, SUMMARY_FORMAT - 1, SUMMARY_FORMAT + 1):
        (run_dir / "summary.json").write_text(
            json.dumps(with_version(summary, version) | {"run_key": "k"})
        )
        assert reusable_summary(run_dir, "k") is None


@pytest.mark.parametrize(("version", "words"), WRONG_VERSIONS, ids=WRONG_IDS)
def test_checkpoint_of_another_version_is_refused(tmp_path, finished_run, version, words):
    state = load_checkpoint(finished_run)
    path = tmp_path / "old.pt"
    torch.save(with_version(state, version), path)  # save_checkpoint would stamp the version
    with pytest.raises(DataPruningError, match=r"old\.pt") as caught:
        load_checkpoint(path)
    assert words in str(caught.value) and "train it again" in str(caught.value)


@pytest.mark.parametrize(("version", "words"), wrong_versions(RESUME_FORMAT), ids=WRONG_IDS)
def test_resume_file_of_another_version_is_refused(tmp_path, version, words):
    path = tmp_path / RESUME_NAME
    torch.save(with_version({"format_version": RESUME_FORMAT, "config_hash": "abc"}, version), path)
    with pytest.raises(DataPruningError, match=RESUME_NAME) as caught:
        TrainState.read(path, "abc")
    assert words in str(caught.value) and "delete it to start the run over" in str(caught.value)


def test_train_cli_with_an_old_resume_file_exits_2_and_changes_nothing(capsys, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        "dataset: {name: digits}\nmodel: {name: mlp, params: {hidden: 8}}\n"
        "train: {epochs: 1, batch_size: 128, checkpoint_every: 3}\n"
    )
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"config_hash": "whatever", "model": {}}, out / RESUME_NAME)  # unversioned
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run_cli(capsys, "train", config, "--out", out)
    assert_one_line_error(code, err, str(out / RESUME_NAME), "no format version", "delete it")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("found", ["datapruning-logits/0", "datapruning-logits/2", "other"])
def test_teacher_logits_sidecar_of_another_format_is_refused(tmp_path, digits, found):
    path = save_teacher_logits(
        tmp_path / "logits.npy",
        np.zeros((digits.num_train, digits.num_classes), np.float32),
        digits,
    )
    assert teacher_logits(path, digits).logits.shape == (digits.num_train, digits.num_classes)
    record = json.loads(logits_sidecar(path).read_text())
    logits_sidecar(path).write_text(json.dumps(record | {"format": found}))
    with pytest.raises(DataPruningError, match=f"has format '{found}'.*recompute the logits"):
        teacher_logits(path, digits)
