"""proto with your own model as the encoder (issue 25, item 8): it clusters the model's
penultimate features, not its class outputs, and ``embedding_dim`` sizes the projection
head it trains with. Before, a 10-class classifier gave 10-dimensional embeddings (its
logits) and ``embedding_dim`` was ignored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from datapruning import ScoringConfig, as_dataset, score

HIDDEN, CLASSES = 24, 10


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, HIDDEN), nn.ReLU())
        self.out = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class NoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.unsqueeze(1)).flatten(1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 16)).astype("float32"), np.arange(200) % CLASSES
    return as_dataset((x, y), test=(x[:20], y[:20]))


def _proto(embedding_dim: int = 8) -> ScoringConfig:
    return ScoringConfig.model_validate(
        {
            "params": {
                "proto": {
                    "encoder_steps": 4,
                    "batch_size": 50,
                    "embedding_dim": embedding_dim,
                    "k": 4,
                }
            }
        }
    )


def test_a_user_classifier_embeds_with_its_penultimate_features(data):
    scores = score(data, "proto", _proto(8), Classifier, progress=False)
    params = scores.metadata["params"]
    assert params["embedding_dim"] == HIDDEN  # not the CLASSES logits
    encoder = params["encoder"]
    assert encoder["embedding_dim"] == HIDDEN
    assert encoder["features"] == "penultimate (the input of its last Linear layer)"
    assert encoder["projection_dim"] == 8  # embedding_dim sizes the projection head


def test_embedding_dim_changes_the_head_of_a_user_encoder(data):
    small = score(data, "proto", _proto(4), Classifier, progress=False)
    large = score(data, "proto", _proto(32), Classifier, progress=False)
    assert small.metadata["params"]["encoder"]["projection_dim"] == 4
    assert large.metadata["params"]["encoder"]["projection_dim"] == 32
    assert not np.array_equal(small.values, large.values)


def test_a_user_model_without_a_linear_layer_embeds_with_its_outputs(data):
    scores = score(data, "proto", _proto(8), NoLinear, progress=False)
    encoder = scores.metadata["params"]["encoder"]
    assert encoder["embedding_dim"] == 3 * 16
    assert encoder["features"] == "outputs"
