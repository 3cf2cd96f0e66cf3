"""``datapruning convert`` and training with ``train.loader: ffcv``."""

from __future__ import annotations

import json

import pytest
from cli_helper import assert_one_line_error, run_cli
from test_cli import CONFIG

pytest.importorskip("ffcv")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "digits.yaml"
    path.write_text(CONFIG)
    return path


def test_convert_then_train_with_ffcv_matches_torch(capsys, tmp_path, config_file):
    beton = tmp_path / "digits.beton"
    code, out, err = run_cli(capsys, "convert", "--dataset", "digits", "--out", beton)
    assert code == 0, err
    assert "wrote 1347 digits training examples" in out
    meta = json.loads((tmp_path / "digits.beton.json").read_text())
    assert (meta["dataset"], meta["num_samples"]) == ("digits", 1347)

    summaries = {}
    for loader in ("torch", "ffcv"):
        run_dir = tmp_path / loader
        args = ["train", config_file, "--out", run_dir, "--set", f"train.loader={loader}"]
        code, out, err = run_cli(capsys, *args, "--set", f"train.beton={beton}")
        assert code == 0, err
        summaries[loader] = json.loads((run_dir / "summary.json").read_text())
    # Same sampler order and the same float32 values: the same run, step for step.
    assert summaries["ffcv"]["final_test_acc"] == summaries["torch"]["final_test_acc"]
    assert summaries["ffcv"]["final_test_loss"] == summaries["torch"]["final_test_loss"]
    assert summaries["ffcv"]["steps"] == summaries["torch"]["steps"]
    assert summaries["ffcv"]["config"]["train"]["beton"] == str(beton)


def test_train_refuses_a_beton_of_another_dataset(capsys, tmp_path, config_file):
    beton = tmp_path / "mnist1d.beton"
    code, _, err = run_cli(
        capsys, "convert", "--out", beton, "--set", "dataset.params.num_samples=100"
    )
    assert code == 0, err
    code, _, err = run_cli(
        capsys,
        "train",
        config_file,
        "--out",
        tmp_path / "run",
        "--set",
        "train.loader=ffcv",
        "--set",
        f"train.beton={beton}",
    )
    assert_one_line_error(code, err, "mnist1d", "convert this dataset")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--dataset", "digits", "--image-mode", "png"], "--image-mode 'png'"),
        (["--dataset", "digits", "--root", "/data"], "unknown key"),
    ],
)
def test_convert_bad_arguments_exit_2_and_write_nothing(capsys, tmp_path, args, fragment):
    code, _, err = run_cli(capsys, "convert", "--out", tmp_path / "x.beton", *args)
    assert_one_line_error(code, err, fragment)
    assert not list(tmp_path.iterdir())


def test_convert_into_missing_directory_exits_2(capsys, tmp_path):
    code, _, err = run_cli(capsys, "convert", "--out", tmp_path / "missing" / "x.beton")
    assert_one_line_error(code, err, "does not exist")


def test_convert_cifar10_images_round_trip_exactly(capsys, tmp_path):
    import pickle

    import numpy as np
    import torch

    from datapruning.data.beton import read_meta
    from datapruning.data.ffcv import make_loader
    from datapruning.data.sources import load_dataset

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {  # the released format: rows of 3072 uint8, channel planes
            b"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, 6).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    beton = tmp_path / "cifar.beton"
    code, _, err = run_cli(
        capsys, "convert", "--dataset", "cifar10", "--root", folder, "--out", beton
    )
    assert code == 0, err
    data = load_dataset("cifar10", {"root": str(folder)})
    assert read_meta(beton)["x_field"] == "rgb_image"
    loader = make_loader(beton, batch_size=7, shuffle=False, fingerprint=data.fingerprint)
    x, y, index = (torch.cat(parts) for parts in zip(*loader, strict=True))
    assert index.tolist() == list(range(30))
    assert torch.equal(x, torch.from_numpy(data.x_train))
    assert torch.equal(y, torch.from_numpy(data.y_train))
