"""The ``datapruning`` command line, run in-process through ``main(argv)``.

``main`` returns the exit code; user errors must print exactly one line on
stderr and return 2. One test runs the installed console script in a
subprocess. ``run`` is covered by the Prefect end-to-end test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helper import assert_one_line_error, run_cli
from runs_helper import write_run

from datapruning.cli import main

DIGITS_TRAIN = 1347  # scikit-learn digits: 1797 images, 25 % held out for test
EPOCHS = 2
KD_ALPHA = 0.7

CONFIG = f"""\
name: cli-test
dataset:
  name: digits
model:
  name: mlp
  params:
    hidden: 32
train:
  epochs: {EPOCHS}
  batch_size: 64
  lr: 0.1
kd:
  alpha: {KD_ALPHA}
  temperature: 2.0
"""


def _no_work(*args, **kwargs):
    raise AssertionError("the command went on to load the dataset")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def config_file(workdir):
    path = workdir / "tiny.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def scores_file(workdir):
    """`datapruning score` on digits, once for the module."""
    out_dir = workdir / "scores"
    out_dir.mkdir()
    out = out_dir / "s.parquet"
    code = main(
        ["score", "--dataset", "digits", "--seeds", "2", "--epochs", "2", "--out", str(out)]
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def teacher_run(workdir, config_file):
    """`datapruning train` on the full training set, once for the module."""
    out = workdir / "runs" / "full"
    assert main(["train", str(config_file), "--out", str(out)]) == 0
    return out


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # Anything a command writes by default lands in a throw-away directory.
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------- datasets


def test_datasets_lists_registered_datasets(capsys):
    code, out, err = run_cli(capsys, "datasets")
    assert code == 0
    assert err == []
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert {"mnist1d", "digits", "cifar10", "cifar100", "imagefolder", "npz"} <= set(names)


# ---------------------------------------------------------------- score


@pytest.mark.parametrize(
    ("option", "choices"),
    [("--metric", ["el2n"]), ("--dataset", ["digits", "mnist1d"])],
)
def test_score_unknown_name_exits_2_naming_choices(capsys, tmp_path, option, choices):
    out = tmp_path / "s.parquet"
    code, stdout, err = run_cli(capsys, "score", option, "nope", "--out", out)
    assert_one_line_error(code, err, "nope", *choices)
    assert stdout == ""
    assert not out.exists()


def test_score_on_an_npz_dataset(capsys, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(60, 4)), y=np.arange(60) % 3)
    out = tmp_path / "s.parquet"
    code, stdout, err = run_cli(
        capsys,
        "score",
        "--dataset",
        f"npz:{tmp_path / 'd.npz'}",
        "--epochs",
        1,
        "--seeds",
        1,
        "--set",
        "train.batch_size=16",
        "--out",
        out,
    )
    assert code == 0, err
    assert "for npz" in stdout
    assert len(pd.read_parquet(out)) == 48  # 20% held out for testing


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--dataset", "npz:{tmp}/noy.npz"], ["has no array 'y'"]),
        (["--dataset", "cifar10", "--root", "{tmp}/nowhere"], ["CIFAR folder", "not found"]),
        (["--dataset", "cifar10"], ["needs a location", "--root DIR"]),
        (["--dataset", "imagefolder", "--root", "{tmp}"], ["has no class folders"]),
        (["--dataset", "mnist1d:/x"], ["reads no files"]),
    ],
)
def test_score_bad_file_dataset_exits_2(capsys, tmp_path, args, fragments):
    np.savez(tmp_path / "noy.npz", x=np.zeros((5, 2)))
    out = tmp_path / "s.parquet"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run_cli(capsys, "score", *args, "--out", out)
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()


def test_score_into_missing_directory_exits_2_and_writes_nothing(capsys, tmp_path, monkeypatch):
    # The output path is checked before any data is loaded or any model trained.
    monkeypatch.setattr("datapruning.data.sources.load_dataset", _no_work)
    before = sorted(tmp_path.rglob("*"))
    code, _, err = run_cli(
        capsys, "score", "--dataset", "digits", "--out", tmp_path / "missing" / "s.parquet"
    )
    assert_one_line_error(code, err, "missing")
    assert sorted(tmp_path.rglob("*")) == before
    assert not (tmp_path / "missing").exists()


def test_score_writes_one_row_per_training_example(scores_file):
    table = pd.read_parquet(scores_file)
    assert len(table) == DIGITS_TRAIN
    assert {"index", "score", "label"} <= set(table.columns)
    assert np.array_equal(np.sort(table["index"].to_numpy()), np.arange(DIGITS_TRAIN))
    assert np.isfinite(table["score"]).all()
    # Two scoring seeds, averaged.
    assert np.allclose(table["score"], (table["score_seed0"] + table["score_seed1"]) / 2)
    assert table["score"].std() > 0
    # Written atomically: nothing but the scores file in its directory.
    assert [p.name for p in scores_file.parent.iterdir()] == ["s.parquet"]


def test_score_metadata_records_provenance(scores_file):
    from datapruning.data.sources import load_dataset
    from datapruning.scores import Scores

    meta = Scores.load(scores_file).metadata
    assert meta["metric"] == "el2n"
    assert meta["seeds"] == [0, 1]
    assert meta["dataset"]["name"] == "digits"
    assert meta["dataset"]["fingerprint"] == load_dataset("digits").fingerprint


# ---------------------------------------------------------------- select


@pytest.mark.parametrize(("strategy", "keep"), [("hard", 0.3), ("easy", 0.1)])
def test_select_keeps_the_top_scoring_examples(capsys, tmp_path, scores_file, strategy, keep):
    out = tmp_path / "idx.npy"
    code, stdout, err = run_cli(
        capsys,
        "select",
        "--scores",
        scores_file,
        "--keep",
        keep,
        "--strategy",
        strategy,
        "--out",
        out,
    )
    assert code == 0, err
    assert err == []
    count = round(keep * DIGITS_TRAIN)
    assert str(count) in stdout

    kept = np.load(out)
    assert kept.shape == (count,)
    assert np.issubdtype(kept.dtype, np.integer)
    assert np.all(np.diff(kept) > 0)  # sorted and unique

    table = pd.read_parquet(scores_file)
    index, values = table["index"].to_numpy(), table["score"].to_numpy()
    score = dict(zip(index.tolist(), values.tolist(), strict=True))
    inside = np.array([score[i] for i in kept])
    outside = np.array([score[i] for i in set(score) - set(kept.tolist())])
    if strategy == "hard":
        assert inside.min() >= outside.max()
    else:
        assert inside.max() <= outside.min()
    # Without ties at the boundary this is exactly the top (or bottom) of the ranking.
    if len(np.unique(values)) == len(values):
        order = np.argsort(-values if strategy == "hard" else values)
        assert np.array_equal(kept, np.sort(index[order[:count]]))
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["idx.npy", "idx.npy.json"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--keep", "0"], ["(0, 1]"]),
        (["--keep", "1.5"], ["1.5", "(0, 1]"]),
        (["--keep", "0.3", "--strategy", "hardest"], ["hardest", "easy", "hard", "random"]),
        (["--keep", "0.3", "--scores", "absent.parquet"], ["absent.parquet"]),
    ],
    ids=["keep-0", "keep-1.5", "unknown-strategy", "missing-scores"],
)
def test_select_bad_arguments_exit_2(capsys, tmp_path, scores_file, args, fragments):
    if "--scores" not in args:
        args = [*args, "--scores", str(scores_file)]
    out = tmp_path / "idx.npy"
    code, stdout, err = run_cli(capsys, "select", *args, "--out", out)
    assert_one_line_error(code, err, *fragments)
    assert stdout == ""
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- train


def read_summary(run_dir):
    return json.loads((Path(run_dir) / "summary.json").read_text())


def test_train_writes_a_run_directory(teacher_run):
    assert {p.name for p in teacher_run.iterdir()} >= {
        "summary.json",
        "metrics.jsonl",
        "checkpoint.pt",
    }
    summary = read_summary(teacher_run)
    assert summary["kept_fraction"] == 1.0
    assert summary["num_train_examples"] == DIGITS_TRAIN
    assert summary["kd"] is None
    assert summary["epochs"] == EPOCHS
    assert summary["model"] == "mlp"
    assert summary["dataset"]["name"] == "digits"
    lines = (teacher_run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == EPOCHS  # evaluated every epoch
    assert json.loads(lines[-1])["test_acc"] == summary["final_test_acc"]
    assert not [p for p in teacher_run.iterdir() if p.name.endswith(".tmp")]


def test_train_prints_accuracy_and_run_dir(capsys, tmp_path, config_file):
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        capsys, "train", config_file, "--out", out, "--set", "train.epochs=1"
    )
    assert code == 0, err
    summary = read_summary(out)
    assert summary["epochs"] == 1  # --set overrides the file
    assert f"{summary['final_test_acc']:.1%}" in stdout
    assert str(out) in stdout


def test_train_on_selected_indices(capsys, tmp_path, config_file, scores_file):
    indices = tmp_path / "idx.npy"
    assert (
        run_cli(capsys, "select", "--scores", scores_file, "--keep", 0.3, "--out", indices)[0] == 0
    )
    out = tmp_path / "subset"
    code, _, err = run_cli(capsys, "train", config_file, "--indices", indices, "--out", out)
    assert code == 0, err
    summary = read_summary(out)
    kept = round(0.3 * DIGITS_TRAIN)
    assert summary["num_train_examples"] == kept
    assert summary["kept_fraction"] == pytest.approx(kept / DIGITS_TRAIN)
    assert summary["kd"] is None


def test_train_distils_from_teacher(capsys, tmp_path, config_file, teacher_run):
    out = tmp_path / "student"
    code, _, err = run_cli(capsys, "train", config_file, "--teacher", teacher_run, "--out", out)
    assert code == 0, err
    summary = read_summary(out)
    assert summary["kd"] is not None
    assert summary["kd"]["alpha"] == pytest.approx(KD_ALPHA)  # the config's kd section
    assert summary["kd"]["temperature"] == pytest.approx(2.0)
    assert summary["kept_fraction"] == 1.0


def test_train_with_missing_indices_or_teacher_exits_2(capsys, tmp_path, config_file):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", config_file, "--indices", "absent.npy", "--out", out)
    assert_one_line_error(code, err, "absent.npy")
    code, _, err = run_cli(capsys, "train", config_file, "--teacher", "absent-dir", "--out", out)
    assert_one_line_error(code, err, "absent-dir")


CONFIG_ERRORS = {
    "missing-file": (None, [], ["not found"]),
    "invalid-yaml": ("train: [1, 2\n", [], ["YAML"]),
    "unknown-key": ("train:\n  epoks: 2\n", [], ["epoks"]),
    "wrong-type": ("train:\n  epochs: many\n", [], ["train.epochs"]),
    "bad-override": (CONFIG, ["--set", "train.epochs=zero"], ["train.epochs"]),
    "unknown-dataset": ("dataset:\n  name: imagenet\n", [], ["imagenet", "digits"]),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_train_config_errors_exit_2_with_one_line(capsys, tmp_path, case):
    text, extra, fragments = CONFIG_ERRORS[case]
    config = tmp_path / "exp.yaml"
    if text is not None:
        config.write_text(text)
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", config, "--out", out, *extra)
    assert_one_line_error(code, err, *fragments)
    assert stdout == ""
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [["score", "--bogus"], ["train", "x.yaml", "--bogus"], ["select", "--bogus", "1"]],
    ids=["score", "train", "select"],
)
def test_unknown_option_exits_2_with_one_line(capsys, argv):
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, "--bogus")


def test_unknown_command_exits_2(capsys):
    code, _, err = run_cli(capsys, "prune-everything")
    assert_one_line_error(code, err, "prune-everything")


# ---------------------------------------------------------------- report


def test_report_prints_table_and_writes_markdown(capsys, tmp_path):
    root = tmp_path / "exp"
    # Full-data final 0.75; drop 0.25 -> target 0.5, reached at 4 s (full) and 1 s (hard).
    write_run(root, "full-s0", [(2.0, 0.25), (4.0, 0.5), (6.0, 0.75)], recipe="full")
    write_run(root, "hard-s0", [(1.0, 0.5), (2.0, 0.625)], recipe="el2n-hard", kept=0.3)
    write_run(root, "rand-s0", [(1.0, 0.25), (2.0, 0.375)], recipe="random", kept=0.3)
    code, stdout, err = run_cli(capsys, "report", root, "--target-drop", "0.25")
    assert code == 0, err
    report = root / "report.md"
    assert report.is_file()
    assert (root / "tta.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert report.read_text().strip() in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| full | 100% |") for line in rows)
    (hard,) = [line for line in rows if line.startswith("| el2n-hard |")]
    assert "1.00" in hard
    assert "4.00" in hard  # 4 s / 1 s
    (rand,) = [line for line in rows if line.startswith("| random |")]
    assert "not reached" in rand
    assert str(report) in stdout
    assert str(root / "report.html") in stdout


def test_report_extra_targets_and_command_in_html(capsys, tmp_path):
    root = tmp_path / "exp"
    # From 0.25 at 2 s to 0.75 at 4 s, full data crosses 0.5 at 3 s, 0.625 at 3.5 s and
    # 0.375 at 2.5 s.
    write_run(root, "full-s0", [(2.0, 0.25), (4.0, 0.75), (6.0, 0.75)], recipe="full")
    write_run(root, "hard-s0", [(1.0, 0.625)], recipe="el2n-hard", kept=0.3)
    args = ["report", root, "--target-drop", "0.25", "--target", "0.625", "--target", "0.5r"]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    # Targets 0.5 (drop), 0.625 (absolute), 0.375 (half of 0.75): one table each.
    headings = [line.split()[2] for line in stdout.splitlines() if line.startswith("### Target")]
    assert headings == ["50.0%", "62.5%", "37.5%"]
    full = [line for line in stdout.splitlines() if line.startswith("| full | 100% |")]
    assert [line.split("|")[9].strip() for line in full] == ["3.00", "3.50", "2.50"]
    page = (root / "report.html").read_text()
    expected = f"datapruning report {root} --target-drop 0.25 --target 0.625 --target 0.5r"
    assert expected in page


@pytest.mark.parametrize(
    ("make", "args", "fragment"),
    [
        ("none", [], "not found"),
        ("empty", [], "no finished runs"),
        ("no-full", [], "full"),
        ("full", ["--target-drop", "1.5"], "--target-drop"),
        ("full", ["--target", "1.5"], "1.5"),
        ("full", ["--target", "ninety"], "ninety"),
    ],
)
def test_report_errors_exit_2_with_one_line(capsys, tmp_path, make, args, fragment):
    root = tmp_path / "exp"
    if make != "none":
        root.mkdir()
    if make == "no-full":
        write_run(root, "hard", [(1.0, 0.9)], recipe="el2n-hard", kept=0.3)
    if make == "full":
        write_run(root, "full", [(1.0, 0.9)], recipe="full")
    code, stdout, err = run_cli(capsys, "report", root, *args)
    assert_one_line_error(code, err, fragment)
    assert stdout == ""
    assert not (root / "report.md").exists()


# ---------------------------------------------------------------- console script


def test_console_script_bad_metric_is_one_line_exit_2(tmp_path):
    script = Path(sys.executable).with_name("datapruning")
    if not script.exists():
        found = shutil.which("datapruning")
        assert found, "the datapruning console script is not installed"
        script = Path(found)
    proc = subprocess.run(
        [str(script), "score", "--metric", "nope", "--out", str(tmp_path / "s.parquet")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "nope" in lines[0]
    assert "el2n" in lines[0]
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------- regressions (bugs found in review)


def test_score_dataset_option_is_not_ignored_with_config(
    capsys, tmp_path, config_file, monkeypatch
):
    monkeypatch.setattr("datapruning.data.sources.load_dataset", _no_work)
    code, _, err = run_cli(
        capsys,
        "score",
        "--config",
        config_file,
        "--dataset",
        "nope",
        "--out",
        tmp_path / "s.parquet",
    )
    assert_one_line_error(code, err, "nope")


def test_interrupted_command_does_not_exit_0(capsys, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("datapruning.data.sources.load_dataset", interrupt)
    code, _, _ = run_cli(capsys, "score", "--dataset", "digits", "--out", tmp_path / "s.parquet")
    assert code != 0
    assert not (tmp_path / "s.parquet").exists()
