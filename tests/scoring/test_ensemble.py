"""The batched ensemble trainer against the training loop it mirrors."""

import copy

import numpy as np
import pytest
import torch

from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.errors import DataPruningError
from datapruning.scoring import score
from datapruning.scoring.ensemble import can_batch, train_ensemble
from datapruning.train.evaluation import predict
from datapruning.train.loop import train

MLP = ModelConfig(name="mlp", params={"hidden": 32})
# Trains through the folded model's batched-GEMM convolutions (folded.py, stacked_conv.py).
CONVNET = ModelConfig(name="convnet1d", params={"channels": 8})
TRAIN = TrainConfig(batch_size=64, lr=0.1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize(
    "model,warmup_epochs,clip",
    [
        (MLP, 0.0, 5.0),
        (MLP, 1.0, 5.0),
        (CONVNET, 0.0, 5.0),
        (MLP, 0.0, None),
        (MLP, 0.0, 0.3),  # clips most steps, each model by its own gradient's norm
        (CONVNET, 0.0, 0.3),
    ],
    ids=["mlp", "warmup", "conv", "mlp-unclipped", "mlp-clipped", "conv-clipped"],
)
def test_each_member_matches_its_sequential_run(digits, model, warmup_epochs, clip):
    seeds = [0, 3]
    recipe = TRAIN.model_copy(update={"warmup_epochs": warmup_epochs, "clip_grad_norm": clip})
    ensemble = train_ensemble(digits, model, recipe, seeds, epochs=2)
    assert len(ensemble) == 2
    x = torch.as_tensor(digits.x_train)
    batched = ensemble.predict(x)
    assert batched.shape == (2, digits.num_train, digits.num_classes)
    for k, seed in enumerate(seeds):
        cfg = recipe.model_copy(update={"epochs": 2, "seed": seed, "eval_every": 0, "targets": []})
        single = train(digits, model, cfg, progress=False).model
        want = predict(single, x)
        # Same init, same batches, same SGD steps: equal up to float rounding.
        torch.testing.assert_close(batched[k], want, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(predict(ensemble.model(k), x), want, rtol=1e-3, atol=1e-3)
    # Different seeds really are different models.
    assert not torch.allclose(batched[0], batched[1], atol=1e-2)


def test_batched_and_sequential_el2n_agree(digits):
    kwargs = {"seeds": 3, "epochs": 2, "ensemble_size": 2}
    batched = score(digits, "el2n", ScoringConfig(**kwargs), MLP, TRAIN, progress=False)
    sequential = score(
        digits, "el2n", ScoringConfig(**kwargs, batched=False), MLP, TRAIN, progress=False
    )
    assert batched.metadata["params"]["batched"] is True
    assert sequential.metadata["params"]["batched"] is False
    for column in ("score", "score_seed0", "score_seed1", "score_seed2"):
        np.testing.assert_allclose(batched.table[column], sequential.table[column], atol=1e-3)


def test_hook_sees_every_example_once_per_epoch(digits):
    seen = np.zeros((2, digits.num_train), dtype=int)

    def count(logits, labels, index):
        assert logits.shape[:2] == labels.shape == index.shape
        assert logits.shape[0] == 2
        np.add.at(seen, (np.arange(2)[:, None], index.numpy()), 1)
        torch.testing.assert_close(labels, torch.as_tensor(digits.y_train)[index])

    train_ensemble(digits, MLP, TRAIN, [0, 1], epochs=3, on_batch=count)
    assert np.all(seen == 3)


def test_models_with_batch_norm_are_not_batched():
    assert can_batch(torch.nn.Linear(2, 2))
    assert not can_batch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)))


def test_warm_up_longer_than_the_run_is_refused(digits):
    from datapruning.errors import DataPruningError

    with pytest.raises(DataPruningError, match="warm-up"):
        train_ensemble(digits, MLP, TRAIN.model_copy(update={"warmup_epochs": 3.0}), [0], epochs=2)


def tiny_images(n=48, seed=0):
    from datapruning.data.dataset import Dataset

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.random((n, 3, 8, 8)).astype(np.float32) * 0.2
    x[np.arange(n), y] += 0.8  # the label is the brightest channel
    return Dataset("tiny", x, y.astype(np.int64), x[:12], y[:12].astype(np.int64), 3)


def test_batch_norm_models_train_alone_like_the_loop():
    data = tiny_images()
    resnet = ModelConfig(name="resnet18", params={"width": 4})
    recipe = TrainConfig(batch_size=16, lr=0.05)
    with pytest.raises(DataPruningError, match="one seed at a time"):
        train_ensemble(data, resnet, recipe, [0, 1], epochs=1)
    # One thread as the loop uses: conv reductions round differently on two, and
    # batch norm on 16-example batches amplifies that within a few steps.
    ensemble = train_ensemble(data, resnet, recipe, [2], epochs=2, threads=1)
    cfg = recipe.model_copy(update={"epochs": 2, "seed": 2, "eval_every": 0, "targets": []})
    model = train(data, resnet, cfg, progress=False).model
    x = torch.as_tensor(data.x_train)
    torch.testing.assert_close(ensemble.predict(x)[0], predict(model, x), rtol=1e-5, atol=1e-5)


def test_forgetting_with_a_batch_norm_model():
    scores = score(
        tiny_images(),
        "forgetting",
        ScoringConfig(seeds=2, epochs=3),
        ModelConfig(name="resnet18", params={"width": 4}),
        TrainConfig(batch_size=16, lr=0.05),
        progress=False,
    )
    assert scores.metadata["params"]["batched"] is False
    assert len(scores) == 48 and np.all(scores.values >= 0)


def test_on_cpu_the_ensemble_trains_the_folded_model(digits):
    from datapruning.scoring.folded import FoldedConv1d, FoldedLinear

    ensemble = train_ensemble(digits, CONVNET, TRAIN, [0, 1], epochs=1)
    assert ensemble.folded is not None
    kinds = {type(m) for m in ensemble.folded.modules()}
    assert {FoldedConv1d, FoldedLinear} <= kinds
    assert not kinds & {torch.nn.Conv1d, torch.nn.Linear, torch.nn.ReLU}  # ReLUs fused
    # The models handed out (and GraNd's base) stay ordinary modules.
    assert {type(m) for m in ensemble.model(1).modules()} >= {torch.nn.Conv1d, torch.nn.ReLU}
    assert not any(isinstance(m, FoldedConv1d) for m in ensemble.base.modules())


class CentredMLP(torch.nn.Module):
    """Subtracts the batch mean: a forward that mixes examples, which folding would get wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x - x.mean(0))


@pytest.mark.parametrize("predict_first", [False, True])
@pytest.mark.parametrize("model_cls", [CentredMLP, lambda: torch.nn.Linear(4, 3)])
def test_the_folded_model_is_used_only_where_it_matches_vmap(model_cls, predict_first):
    from torch.func import stack_module_state

    from datapruning.scoring.ensemble import Ensemble

    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(model_cls())
    params, buffers = stack_module_state(models)
    ensemble = Ensemble(copy.deepcopy(models[0]).to("meta"), params, buffers, [0, 1, 2])
    assert ensemble.folded is not None
    x, shared = torch.randn(3, 10, 4), torch.randn(6, 4)
    # The check runs on first use, whichever it is (the same inputs for every
    # model would not show that CentredMLP mixes examples).
    if predict_first:
        ensemble.predict(shared)
    got = ensemble.forward(x)
    for k, model in enumerate(models):
        torch.testing.assert_close(got[k], model(x[k]))
    assert (ensemble.folded is None) is (model_cls is CentredMLP)
    predicted = ensemble.predict(shared)
    for k, model in enumerate(models):
        torch.testing.assert_close(predicted[k], model(shared), rtol=1e-5, atol=1e-6)
    if model_cls is not CentredMLP:  # whose outputs hang on the batch
        # In chunks: 4 // 3 = 1 row at a time for the folded model.
        torch.testing.assert_close(ensemble.predict(shared, batch_size=4), predicted)


def test_ensembles_leave_a_core_free_by_default_at_most_one_thread_per_model(monkeypatch):
    import os

    from datapruning.scoring.ensemble import ensemble_threads

    # A busy core stalls every thread of a parallel region: one is left free (issue 25).
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert ensemble_threads(None, 8) == 3
    assert ensemble_threads(None, 2) == 2
    assert ensemble_threads(3, 8) == 3  # as configured
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert ensemble_threads(None, 8) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert ensemble_threads(None, 8) == 1
