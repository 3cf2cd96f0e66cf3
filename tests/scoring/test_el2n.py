import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from datapruning.config import (
    ModelConfig,
    ScoringConfig,
    TrainConfig,
    sparsity_config,
)
from datapruning.data.sources import load_dataset
from datapruning.scores import Scores
from datapruning.scoring import METRICS, get_metric, score
from datapruning.scoring.el2n import el2n, score_el2n

MLP = ModelConfig(name="mlp", params={"hidden": 64})
TRAIN = TrainConfig(batch_size=32, lr=0.1)


def reference_el2n(logits, labels):
    out = []
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        exps = [math.exp(v - max(row)) for v in row]
        probs = [e / sum(exps) for e in exps]
        error = [p - (1.0 if k == label else 0.0) for k, p in enumerate(probs)]
        out.append(math.sqrt(sum(e * e for e in error)))
    return out


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def digits_scores(digits):
    return score(digits, "el2n", ScoringConfig(seeds=2, epochs=2), MLP, TRAIN, progress=False)


def test_el2n_formula_on_hand_made_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [1.0, 3.0, -2.0], [-4.0, 0.1, 7.0]])
    labels = torch.tensor([0, 2, 0, 2])
    want = reference_el2n(logits, labels)
    got = el2n(logits, labels)
    assert got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(el2n(logits.double(), labels).numpy(), want, rtol=1e-12)


def test_el2n_known_values():
    c = 10
    confident = torch.tensor([[50.0] + [0.0] * (c - 1)])
    # Confidently right: no error; confidently wrong: sqrt(2).
    assert el2n(confident, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-6)
    assert el2n(confident, torch.tensor([3])).item() == pytest.approx(math.sqrt(2), rel=1e-6)
    # Uniform prediction: sqrt((1 - 1/c)^2 + (c - 1)/c^2) = sqrt((c - 1)/c).
    uniform = torch.zeros(1, c)
    assert el2n(uniform, torch.tensor([7])).item() == pytest.approx(math.sqrt((c - 1) / c))


def test_registered():
    assert get_metric("el2n").function is score_el2n
    assert "el2n" in METRICS


def test_score_el2n_table(digits, digits_scores):
    scores = digits_scores
    assert isinstance(scores, Scores)
    table = scores.table
    assert len(scores) == digits.num_train
    assert list(table.columns) == ["index", "score", "label", "score_seed0", "score_seed1"]
    np.testing.assert_array_equal(table["index"], np.arange(digits.num_train))
    np.testing.assert_array_equal(table["label"], digits.y_train)
    np.testing.assert_allclose(
        table["score"], (table["score_seed0"] + table["score_seed1"]) / 2, rtol=1e-6
    )
    values = scores.values
    assert values.min() >= 0
    assert values.max() <= math.sqrt(2) + 1e-6
    # Two seeds, two differently initialised models.
    assert not np.allclose(table["score_seed0"], table["score_seed1"])
    # Scores spread out: briefly trained models are surer of some examples than others.
    assert values.std() > 0.05


def test_score_el2n_metadata(digits, digits_scores):
    meta = digits_scores.metadata
    assert meta["metric"] == "el2n"
    assert meta["dataset"]["fingerprint"] == digits.fingerprint
    assert meta["dataset"]["name"] == "digits"
    assert meta["dataset"]["num_train"] == digits.num_train
    assert meta["seeds"] == [0, 1]
    assert meta["params"]["epochs"] == 2
    assert meta["params"]["seeds"] == 2
    assert meta["model"]["name"] == "mlp"
    assert meta["seconds"] > 0
    assert digits_scores.fingerprint == digits.fingerprint
    digits_scores.check_dataset(digits.fingerprint)


def test_score_el2n_is_deterministic_and_round_trips(digits, digits_scores, tmp_path):
    again = score(digits, "el2n", ScoringConfig(seeds=2, epochs=2), MLP, TRAIN, progress=False)
    np.testing.assert_array_equal(again.values, digits_scores.values)
    path = digits_scores.save(tmp_path / "el2n.parquet")
    loaded = Scores.load(path, fingerprint=digits.fingerprint)
    np.testing.assert_array_equal(loaded.values, digits_scores.values)
    assert loaded.metadata == digits_scores.metadata


def test_el2n_ranks_flipped_labels_high(digits):
    rng = np.random.default_rng(0)
    n = digits.num_train
    flipped = rng.choice(n, size=n // 10, replace=False)
    y = digits.y_train.copy()
    y[flipped] = (y[flipped] + rng.integers(1, 10, size=len(flipped))) % 10
    assert np.all(y[flipped] != digits.y_train[flipped])
    noisy = replace(digits, y_train=y)

    scores = score(noisy, "el2n", ScoringConfig(seeds=2, epochs=3), MLP, TRAIN, progress=False)
    is_flipped = np.zeros(n, dtype=bool)
    is_flipped[flipped] = True
    values = scores.values
    assert roc_auc_score(is_flipped, values) > 0.9
    assert values[is_flipped].mean() > values[~is_flipped].mean() + 0.3
    # Keeping the hardest 10% catches most of the flipped labels.
    hardest = scores.select(0.1, "hard")
    assert is_flipped[hardest].mean() > 0.6


def test_scoring_models_stay_dense_under_train_sparsity(digits, digits_scores):
    sparse_train = TRAIN.model_copy(update={"sparsity": sparsity_config(target=0.9, start=0)})
    scores = score(
        digits, "el2n", ScoringConfig(seeds=2, epochs=2), MLP, sparse_train, progress=False
    )
    np.testing.assert_array_equal(scores.table["score"], digits_scores.table["score"])
    # Also for the sequential path through the training loop, and other student settings.
    student = TRAIN.model_copy(
        update={"sparsity": sparsity_config(target=0.9, start=0), "steps": 7, "eval_every": 3}
    )
    sequential = score(
        digits,
        "el2n",
        ScoringConfig(seeds=2, epochs=2, batched=False),
        MLP,
        student,
        progress=False,
    )
    np.testing.assert_allclose(sequential.values, digits_scores.values, atol=1e-3)


# ------------------------------------------------- MNIST-1D label noise, resume


@pytest.fixture(scope="module")
def noisy_mnist1d(tmp_path_factory):
    """MNIST-1D with 10% of the training labels flipped, loaded from an npz file."""
    clean = load_dataset("mnist1d")
    rng = np.random.default_rng(0)
    n = clean.num_train
    flipped = rng.choice(n, size=n // 10, replace=False)
    y = clean.y_train.copy()
    y[flipped] = (y[flipped] + rng.integers(1, 10, size=len(flipped))) % 10
    path = tmp_path_factory.mktemp("noisy") / "mnist1d-flipped.npz"
    np.savez(path, x=clean.x_train, y=y, x_test=clean.x_test, y_test=clean.y_test)
    is_flipped = np.zeros(n, dtype=bool)
    is_flipped[flipped] = True
    return load_dataset("npz", {"path": str(path)}), is_flipped


def test_el2n_finds_flipped_mnist1d_labels(noisy_mnist1d):
    noisy, is_flipped = noisy_mnist1d
    assert noisy.num_train == 4000 and is_flipped.sum() == 400
    # Two seeds, five epochs keep the test short; the default 4 x 10 reaches ~0.90.
    scores = score(noisy, "el2n", ScoringConfig(seeds=2, epochs=5), progress=False)
    auroc = roc_auc_score(is_flipped, scores.values)
    assert auroc > 0.8, auroc
    # Flipped examples make up 10% of the data but about half the hardest 10%.
    assert is_flipped[scores.select(0.1, "hard")].mean() > 0.4


def test_el2n_resumes_with_only_the_missing_seeds(digits, tmp_path, monkeypatch):
    import datapruning.scoring.driver as module

    trained: list[list[int]] = []
    real = module.train_ensemble

    def recording(dataset, model_cfg, train_cfg, seeds, *args, **kwargs):
        trained.append(list(seeds))
        if 2 in seeds:
            raise KeyboardInterrupt  # the user gives up while seed 2 trains
        return real(dataset, model_cfg, train_cfg, seeds, *args, **kwargs)

    monkeypatch.setattr(module, "train_ensemble", recording)
    cfg = ScoringConfig(seeds=3, epochs=2, ensemble_size=1)
    work = tmp_path / "parts"
    with pytest.raises(KeyboardInterrupt):
        score(digits, "el2n", cfg, MLP, TRAIN, progress=False, work_dir=work)
    assert trained == [[0], [1], [2]]
    assert len(list(work.glob("*/seed*.npz"))) == 2

    trained.clear()
    monkeypatch.setattr(
        module, "train_ensemble", lambda *a, **k: (trained.append(a[3]), real(*a, **k))[1]
    )
    resumed = score(digits, "el2n", cfg, MLP, TRAIN, progress=False, work_dir=work)
    assert trained == [[2]]
    fresh = score(digits, "el2n", cfg, MLP, TRAIN, progress=False)
    np.testing.assert_allclose(resumed.values, fresh.values, rtol=1e-6)
    assert resumed.metadata["seeds"] == [0, 1, 2]
    assert resumed.metadata["seconds"] > 0

    # Other settings never reuse these parts.
    trained.clear()
    score(
        digits,
        "el2n",
        cfg.model_copy(update={"epochs": 1}),
        MLP,
        TRAIN,
        progress=False,
        work_dir=work,
    )
    assert trained == [[0], [1], [2]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x_train": "nan"}, "NaN or inf"),
        ({"y_train": 10}, "labels must lie in 0..9"),
        ({"y_train": -1}, "labels must lie in 0..9"),
    ],
)
def test_el2n_refuses_bad_inputs(digits, change, message):
    from datapruning.errors import DataPruningError

    if "x_train" in change:
        x = digits.x_train.copy()
        x[5, 3] = np.nan
        bad = replace(digits, x_train=x)
    else:
        y = digits.y_train.copy()
        y[7] = change["y_train"]
        bad = replace(digits, y_train=y)
    with pytest.raises(DataPruningError, match=message):
        score(bad, "el2n", ScoringConfig(seeds=1, epochs=1), MLP, TRAIN, progress=False)
