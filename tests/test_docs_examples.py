"""The Python examples of the README and the docs are Python, and the loop examples run.

Every ```python block of README.md and docs/ must parse. The examples of the README and
of docs/guides/your-loop.md that a reader copies into their own loop (a subset sampler
from a scores file, InfoBatch's three lines, the library's ``score`` and ``train`` on
your own model and data) are run as written, on a small generated data set, with the
names the text leaves to the reader (``train_set``, ``model``, ``optimizer``, ...)
defined here. A change of the API that breaks an example fails this test.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_python_blocks_parse(path):
    for number, code in enumerate(blocks(path)):
        try:
            ast.parse(code)
        except SyntaxError as error:
            pytest.fail(f"{path.name}, python block {number}: {error}")


class _Indexed(Dataset):
    """(x, y, index) items, as InfoBatch's examples require."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], i


def _reader_names(tmp_path: Path) -> dict:
    """What the examples leave to the reader: data, a model, an optimizer, a scores file."""
    from datapruning import as_dataset
    from datapruning.config import ScoringConfig
    from datapruning.scoring import score

    g = np.random.default_rng(0)
    x = g.normal(size=(240, 12)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    x_test = g.normal(size=(60, 12)).astype("float32")
    y_test = (x_test[:, 0] + 0.5 * x_test[:, 1] > 0).astype("int64")
    train_set = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))

    def my_model_factory() -> nn.Module:
        return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 2))

    scores = score(
        as_dataset(train_set, test=(x_test, y_test)),
        "el2n",
        ScoringConfig(seeds=1, epochs=1),
        my_model_factory,
    )
    scores.save(tmp_path / "scores.parquet")
    torch.manual_seed(0)
    model = my_model_factory()
    return {
        "train_set": train_set,
        "indexed_train_set": _Indexed(torch.from_numpy(x), torch.from_numpy(y)),
        "train_labels": y,
        "epochs": 2,
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.05),
        "my_torch_dataset": train_set,
        "x_test": x_test,
        "y_test": y_test,
        "my_model_factory": my_model_factory,
    }


@pytest.mark.parametrize(
    "page, wanted",
    [
        ("README.md", ["SubsetSampler.from_scores", "InfoBatchSampler("]),
        ("docs/guides/your-loop.md", ["SubsetSampler.from_scores", "InfoBatchSampler(", "train("]),
    ],
)
def test_loop_examples_run_as_written(page, wanted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = _reader_names(tmp_path)
    codes = blocks(REPO / page)
    for marker in wanted:
        matching = [code for code in codes if marker in code]
        assert matching, f"{page}: no python example with {marker!r}"
        namespace = dict(names)
        exec(compile(matching[0], f"{page}: {marker}", "exec"), namespace)
    if "train(" in wanted:
        # The own-model example: scores selected to dataset indices, a run trained on them.
        assert len(namespace["keep"]) == 120
        assert 0.0 <= namespace["result"].summary["final_test_acc"] <= 1.0
