"""The Python API (issue 25, item 3): the entry points exported from ``datapruning``, their
docstring examples run here, one meaning of ``select``, fingerprints of your own data,
``with_index`` and ``as_dataset``'s held-out split said out loud."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import datapruning
from datapruning.errors import DataPruningError, FingerprintMismatchError

# Each public entry point with a runnable example in its docstring (the docs site renders
# these docstrings; this test runs every example in them).
EXAMPLES = [
    "datapruning.scores.select",
    "datapruning.scoring.score",
    "datapruning.train.loop.train",
    "datapruning.user.as_dataset",
    "datapruning.user.fingerprint",
    "datapruning.user.with_index",
]


@pytest.mark.parametrize("name", EXAMPLES)
def test_docstring_example_runs(name):
    module, attr = name.rsplit(".", 1)
    function = getattr(importlib.import_module(module), attr)
    tests = doctest.DocTestFinder().find(function, name, globs={})
    examples = sum(len(test.examples) for test in tests)
    assert examples >= 2, f"{name} has no example in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_entry_points_are_exported():
    for name in ("score", "select", "train", "run", "fingerprint", "with_index"):
        assert name in datapruning.__all__
        assert callable(getattr(datapruning, name))
    for name in ("TrainConfig", "ModelConfig", "ScoringConfig", "DataConfig", "KDConfig"):
        assert isinstance(getattr(datapruning, name), type)
    from datapruning.train import train as train_function
    from datapruning.train.loop import train as loop_train

    assert train_function is loop_train


def test_train_is_callable_as_the_package_or_the_function():
    # Importing a submodule binds the package to datapruning.train: it must still train.
    import datapruning.train.loop

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)).astype("float32"), np.arange(40) % 2
    data = datapruning.as_dataset((x, y), test=(x[:10], y[:10]))
    result = datapruning.train(
        data, datapruning.ModelConfig(name="mlp"), datapruning.TrainConfig(epochs=1, batch_size=20)
    )
    assert isinstance(result, datapruning.train.loop.TrainResult)
    assert result.summary["steps"] == 2


def test_import_stays_light():
    code = (
        "import sys, datapruning; datapruning.__all__; "
        "print('torch' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _scores(index=(10, 11, 12, 13), score=(0.9, 0.1, 0.5, 0.7)):
    table = pd.DataFrame({"index": list(index), "score": list(score), "label": [0, 1, 0, 1]})
    return datapruning.Scores(table, {"dataset": {"fingerprint": "v2:abc", "num_classes": 2}})


def test_select_takes_scores_or_a_path_and_returns_dataset_indices(tmp_path):
    # Before: datapruning.select took an array and returned positions, and given a Scores
    # failed with "TypeError: float() argument must be ... not 'Scores'".
    scores = _scores()
    assert datapruning.select(scores, 0.5, "hard").tolist() == [10, 13]
    path = scores.save(tmp_path / "s.parquet")
    assert datapruning.select(path, 0.5, "hard").tolist() == [10, 13]
    assert datapruning.select(str(path), 0.5, "easy").tolist() == [11, 12]
    np.testing.assert_array_equal(
        datapruning.select(scores, 0.5, "hard"), scores.select(0.5, "hard")
    )


def test_select_refuses_an_array_in_one_line():
    with pytest.raises(DataPruningError, match="select_positions"):
        datapruning.select(np.array([0.1, 0.2]), 0.5)


def test_select_checks_the_fingerprint(tmp_path):
    path = _scores().save(tmp_path / "s.parquet")
    assert datapruning.select(path, 0.5, fingerprint="v2:abc").tolist() == [10, 13]
    with pytest.raises(FingerprintMismatchError, match="score this dataset first"):
        datapruning.select(path, 0.5, fingerprint="v2:other")


def test_select_positions_is_the_array_form():
    from datapruning.scores import select_positions

    assert select_positions(np.array([0.9, 0.1, 0.5, 0.7]), 0.5, "hard").tolist() == [0, 3]


def test_strategy_for_says_what_auto_chose():
    scores = _scores()
    assert scores.strategy_for(0.5, "auto") == "easy"  # 2 kept < 100 per class
    assert scores.strategy_for(0.5, "hard") == "hard"


def test_as_dataset_says_what_it_held_out():
    # Before: as_dataset((x, y)) held out 20% silently, and the scores of (x, y) were then
    # refused as another dataset's.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)).astype("float32"), np.arange(50) % 2
    with pytest.warns(UserWarning, match=r"held out 10 of 50 examples .*give test="):
        split = datapruning.as_dataset((x, y))
    assert split.num_train == 40
    assert split.fingerprint != datapruning.fingerprint((x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole = datapruning.as_dataset((x, y), test=(x[:5], y[:5]))
    assert whole.fingerprint == datapruning.fingerprint((x, y))


def test_fingerprint_of_a_torch_dataset_matches_its_arrays_and_the_dataset():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2, 4)).astype("float32")
    y = np.arange(30) % 3
    ds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    expected = datapruning.fingerprint((x, y))
    assert datapruning.fingerprint(ds) == expected
    data = datapruning.as_dataset(ds, test=(x[:6], y[:6]), stream=False)
    assert datapruning.fingerprint(data) == expected == data.fingerprint


def test_with_index_yields_positions_for_infobatch():
    ds = TensorDataset(torch.arange(12.0).reshape(6, 2), torch.tensor([0, 1, 0, 1, 0, 1]))
    wrapped = datapruning.with_index(ds)
    assert len(wrapped) == 6
    _, y, index = wrapped[4]
    assert index == 4 and y.item() == 0
    sampler = datapruning.InfoBatchSampler(6, epochs=2, prune=0.5, seed=0)
    sampler.set_epoch(0)
    for _x, _y, index in DataLoader(wrapped, batch_size=3, sampler=sampler):
        sampler.update(index, torch.ones(len(index)))
    assert torch.equal(sampler.weights(index).to(torch.float32), sampler.weights(index))


def test_with_index_refuses_items_that_are_not_pairs():
    with pytest.raises(DataPruningError, match="not an \\(x, y\\) pair"):
        datapruning.with_index(_Triples())[0]
    with pytest.raises(DataPruningError, match="with_index takes a torch Dataset"):
        datapruning.with_index(5)


class _Triples(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        return 1, 2, 3


@pytest.mark.slow
def test_the_run_example_runs(tmp_path, monkeypatch):
    """datapruning.run's docstring example, with its output_dir in a temporary folder."""
    import textwrap
    from pathlib import Path

    from datapruning.api import run

    doc = run.__doc__
    assert doc is not None
    block = doc.split("::\n", 1)[1].split('    """')[0]
    code = textwrap.dedent(block).replace("/tmp/datapruning-example", str(tmp_path / "out"))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # configs/ is the checkout's
    scope: dict[str, object] = {}
    exec(compile(code, "datapruning.run example", "exec"), scope)
    result = scope["result"]
    assert isinstance(result, dict)
    assert result["counts"].get("failed", 0) == 0
    assert [Path(path).is_file() for path in result["reports"]] == [True]


def test_uint8_pixels_are_the_same_data_in_memory_streamed_and_fingerprinted():
    # Before: in memory a uint8 torch Dataset became 0..255, streamed p / 255 (and its
    # in-memory test split 0..255 beside a streamed training split in [0, 1]).
    x = torch.randint(0, 256, (20, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(20) % 2
    ds, test = TensorDataset(x, y), TensorDataset(x[:4], y[:4])
    memory = datapruning.as_dataset(ds, test=test, stream=False)
    streamed = datapruning.as_dataset(ds, test=test, stream=True)
    assert memory.fingerprint == streamed.fingerprint == datapruning.fingerprint(ds)
    assert datapruning.fingerprint((x.numpy(), y.numpy())) == memory.fingerprint
    assert float(memory.x_train.max()) <= 1.0 and float(streamed.x_test.max()) <= 1.0
    np.testing.assert_array_equal(memory.x_test, streamed.x_test)
