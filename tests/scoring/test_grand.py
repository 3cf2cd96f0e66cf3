"""GraNd: per-example gradient norms checked against plain autograd, one example at a time."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.models import build_model
from datapruning.scoring import get_metric, score
from datapruning.scoring.grand import grad_norms, last_layer_names, score_grand

MLP = ModelConfig(name="mlp", params={"hidden": 16})
TRAIN = TrainConfig(batch_size=64, lr=0.1)


def autograd_norms(model, x, y, names):
    out = []
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        F.cross_entropy(model(xi[None]), yi[None]).backward()
        params = dict(model.named_parameters())
        out.append(sum(params[n].grad.pow(2).sum() for n in names).sqrt().item())
    return np.array(out)


@pytest.mark.parametrize("name", ["mlp", "convnet1d"])
@pytest.mark.parametrize("layer", ["all", "last"])
def test_grad_norms_match_autograd(name, layer):
    torch.manual_seed(0)
    model = build_model(name, (24,), 5)
    x, y = torch.randn(9, 24), torch.randint(0, 5, (9,))
    names = last_layer_names(model) if layer == "last" else [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    got = grad_norms(model, params, {}, x, y, names, batch_size=4)
    np.testing.assert_allclose(got.numpy(), autograd_norms(model, x, y, names), rtol=1e-4)


def test_last_layer_norm_has_the_closed_form():
    # For a linear classifier W h + b: ||dL/dW, dL/db|| = ||p - onehot|| * sqrt(||h||^2 + 1).
    torch.manual_seed(1)
    model = build_model("mlp", (6,), 4, hidden=8, depth=1)
    assert last_layer_names(model) == ["net.3.weight", "net.3.bias"]
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    hidden = model.net[:3](x)
    error = F.softmax(model(x), dim=1) - F.one_hot(y, 4)
    want = error.norm(dim=1) * (hidden.pow(2).sum(dim=1) + 1).sqrt()
    params = {n: p.detach() for n, p in model.named_parameters()}
    got = grad_norms(model, params, {}, x, y, last_layer_names(model))
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)


def test_score_grand_records_the_variant():
    digits = load_dataset("digits")
    assert get_metric("grand").function is score_grand
    full = score(digits, "grand", ScoringConfig(seeds=2, epochs=1), MLP, TRAIN, progress=False)
    last = score(
        digits,
        "grand",
        ScoringConfig(seeds=2, epochs=1, params={"grand": {"layer": "last"}}),
        MLP,
        TRAIN,
        progress=False,
    )
    assert full.metadata["metric"] == "grand"
    assert full.metadata["params"]["layer"] == "all"
    assert full.metadata["params"]["parameters"] == [
        "net.1.weight",
        "net.1.bias",
        "net.3.weight",
        "net.3.bias",
        "net.5.weight",
        "net.5.bias",
    ]
    assert last.metadata["params"]["layer"] == "last"
    assert last.metadata["params"]["parameters"] == ["net.5.weight", "net.5.bias"]
    assert list(full.table.columns) == ["index", "score", "label", "score_seed0", "score_seed1"]
    assert np.all(full.values > 0)
    # The full gradient includes the last layer's, so its norm is never smaller.
    assert np.all(full.values >= last.values - 1e-6)
    # The two variants rank examples alike (0.63 Spearman when written).
    from scipy.stats import spearmanr

    assert spearmanr(full.values, last.values).statistic > 0.5
