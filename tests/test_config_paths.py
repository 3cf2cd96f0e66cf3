"""Relative dataset locations in a config file are the file's folder's (issue 25, item 8):
before, ``npz:data.npz`` in ``exp/c.yaml`` was looked for in the working directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helper import assert_one_line_error, run_cli

from datapruning.config import load_config
from datapruning.data.sources import load_dataset
from datapruning.errors import UnknownNameError


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(40, 5)).astype("float32"), y=np.arange(40) % 2)
    return path


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def test_a_relative_npz_name_resolves_against_the_config_folder(elsewhere):
    _npz(elsewhere / "exp" / "data.npz")
    config = elsewhere / "exp" / "c.yaml"
    config.write_text("dataset:\n  name: npz:data.npz\n")
    cfg = load_config(config)
    assert Path(cfg.dataset.name.partition(":")[2]) == elsewhere / "exp" / "data.npz"
    assert load_dataset(cfg.dataset.name, cfg.dataset.params).num_train == 32


def test_a_relative_params_path_resolves_against_the_config_folder(elsewhere):
    _npz(elsewhere / "exp" / "data.npz")
    config = elsewhere / "exp" / "c.yaml"
    config.write_text("dataset:\n  name: npz\n  params:\n    path: data.npz\n")
    cfg = load_config(config)
    assert load_dataset(cfg.dataset.name, cfg.dataset.params).num_train == 32


def test_sweep_datasets_resolve_against_the_config_folder(elsewhere):
    config = elsewhere / "exp" / "c.yaml"
    config.write_text(
        "sweep:\n  datasets:\n    - name: npz:a.npz\n    - name: imagefolder\n"
        "      params:\n        root: imgs\n    - name: digits\n"
    )
    datasets = load_config(config).sweep.datasets
    assert datasets is not None
    assert Path(datasets[0].name.partition(":")[2]) == elsewhere / "exp" / "a.npz"
    assert Path(datasets[1].params["root"]) == elsewhere / "exp" / "imgs"
    assert datasets[2].name == "digits"


def test_absolute_paths_and_overrides_are_left_alone(elsewhere):
    data = _npz(elsewhere / "data.npz")
    config = elsewhere / "exp" / "c.yaml"
    config.write_text(f"dataset:\n  name: npz:{data}\n")
    assert load_config(config).dataset.name == f"npz:{data}"
    # An override is typed in the shell: relative to the working directory, as before.
    cfg = load_config(config, ["dataset.name=npz:here.npz"])
    assert cfg.dataset.name == "npz:here.npz"


def test_a_file_given_as_a_dataset_name_suggests_its_source(capsys, elsewhere):
    # Before: "unknown dataset 'data.npz'; choose one of: ..." and nothing more.
    with pytest.raises(UnknownNameError, match=r"name its source: npz:data\.npz"):
        load_dataset("data.npz")
    code, _, err = run_cli(capsys, "score", "--dataset", "data.npz", "--out", "s.parquet")
    assert_one_line_error(code, err, "unknown dataset 'data.npz'", "npz:data.npz")


def test_datasets_states_each_default_model(capsys):
    code, out, err = run_cli(capsys, "datasets")
    assert code == 0 and err == []
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert rows["dataset"].split()[1:3] == ["default", "model"]
    assert rows["mnist1d"].split()[1] == "convnet1d"
    assert rows["digits"].split()[1] == "mlp"
    assert rows["cifar10"].split()[1] == "resnet18"
    # The width each device gets (issue 25 item 4: the table did not say which model).
    assert "resnet18 (width 8 cpu, 64 cuda)" in rows["cifar10"]
    assert "resnet18 (width 8 cpu, 64 cuda) if images, else mlp" in rows["npz"]
    assert "model.params.width" in out
