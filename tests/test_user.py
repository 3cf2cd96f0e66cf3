"""Your own nn.Module and Dataset through train() and the metrics (the Python API)."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.errors import DataPruningError
from datapruning.models import build_model
from datapruning.scoring import score
from datapruning.train.loop import train
from datapruning.user import as_dataset

MLP = ModelConfig(name="mlp", params={"hidden": 32})
TRAIN = TrainConfig(epochs=2, batch_size=64, lr=0.1, targets=[0.5])


class Pairs(TorchDataset):
    """A user's torch Dataset: (tensor, int) items."""

    def __init__(self, x, y):
        self.x, self.y = torch.as_tensor(x), y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class Net(nn.Module):
    """A user's model, not in the registry."""

    def __init__(self, features=64, classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, 24), nn.ReLU())
        self.out = nn.Linear(24, classes)

    def forward(self, x):
        return self.out(self.body(x.flatten(1)))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def user_data(digits):
    return as_dataset(
        Pairs(digits.x_train, digits.y_train), test=Pairs(digits.x_test, digits.y_test)
    )


def test_as_dataset_reads_a_torch_dataset_and_arrays(digits, user_data):
    np.testing.assert_array_equal(user_data.x_train, digits.x_train)
    np.testing.assert_array_equal(user_data.y_test, digits.y_test)
    assert user_data.num_classes == 10 and user_data.fingerprint == digits.fingerprint
    held_out = as_dataset((digits.x_train, digits.y_train), seed=1)
    assert held_out.num_train + len(held_out.y_test) == digits.num_train
    assert 0.15 < len(held_out.y_test) / digits.num_train < 0.25
    assert as_dataset(digits) is digits


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("not data", "must be a datapruning Dataset"),
        ((np.ones((4, 2)), np.zeros(3)), "one label per example"),
        ((np.ones((4, 2)), np.array([0.5, 1, 0, 1])), "integer class ids"),
        ((np.full((6, 2), np.nan), np.array([0, 1] * 3)), "NaN or inf"),
        ([(1, 2, 3)], "must be a datapruning Dataset"),
    ],
)
def test_as_dataset_refuses_bad_data(data, message):
    with pytest.raises(DataPruningError, match=message):
        as_dataset(data, test=(np.ones((2, 2)), np.array([0, 1])))


def test_a_factory_trains_exactly_like_the_registered_model(digits, user_data):
    registered = train(digits, MLP, TRAIN, progress=False)

    def factory():
        return build_model("mlp", digits.input_shape, 10, hidden=32)

    mine = train(user_data, factory, TRAIN, progress=False)
    for key, value in registered.model.state_dict().items():
        assert torch.equal(mine.model.state_dict()[key], value), key
    assert mine.summary["model"].startswith("user:")


def test_a_user_module_trains_in_place_from_a_torch_dataset(digits, tmp_path):
    torch.manual_seed(0)
    net = Net()
    before = net.out.weight.detach().clone()
    result = train(Pairs(digits.x_train, digits.y_train), net, TRAIN, run_dir=tmp_path / "run")
    assert result.model is net and not torch.equal(net.out.weight, before)
    assert result.summary["model"] == f"user:{Net.__module__}.Net"
    assert result.summary["final_test_acc"] > 0.5
    # The run's checkpoint records the model, and a resume of another model is refused.
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def test_scores_from_a_factory_equal_the_registered_models(digits, user_data):
    cfg = ScoringConfig(seeds=2, epochs=1)

    def factory():
        return build_model("mlp", digits.input_shape, 10, hidden=32)

    registered = score(digits, "el2n", cfg, MLP, TRAIN, progress=False)
    mine = score(user_data, "el2n", cfg, factory, TRAIN, progress=False)
    np.testing.assert_array_equal(mine.values, registered.values)
    assert mine.metadata["model"]["name"].startswith("user:")


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["el2n", "grand", "forgetting"])
def test_every_trained_model_metric_takes_a_user_module_and_dataset(digits, metric):
    data = Pairs(digits.x_train, digits.y_train)
    cfg = ScoringConfig(seeds=2, epochs=1)
    scores = score(data, metric, cfg, Net(), TRAIN, progress=False)
    assert len(scores) == len(scores.table["index"]) and np.all(np.isfinite(scores.values))
    assert scores.metadata["model"]["name"] == f"user:{Net.__module__}.Net"
    # Each seed's model is a fresh initialisation: the seeds' scores differ.
    assert not np.array_equal(scores.table["score_seed0"], scores.table["score_seed1"])
    if metric == "el2n":  # one by one through the training loop: a copy per seed too
        sequential = score(
            data, metric, cfg.model_copy(update={"batched": False}), Net(), TRAIN, progress=False
        )
        np.testing.assert_allclose(sequential.values, scores.values, atol=1e-3)


def test_proto_takes_a_user_encoder(digits):
    cfg = ScoringConfig(params={"proto": {"encoder_epochs": 1, "batch_size": 128}})
    scores = score(digits, "proto", cfg, Net(classes=16), TrainConfig(), progress=False)
    # Its penultimate features (24), not its 16 class outputs (issue 25).
    assert scores.metadata["params"]["embedding_dim"] == 24
    assert np.all(np.isfinite(scores.values))


def test_a_factory_that_returns_no_module_is_refused(digits):
    with pytest.raises(DataPruningError, match=r"returned str, not an nn\.Module"):
        train(digits, lambda: "model", TRAIN, progress=False)
