"""Forgetting events counted from per-step predictions."""

from dataclasses import replace

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.scoring import get_metric, score
from datapruning.scoring.forgetting import ForgettingCounter, score_forgetting


def logits_for(correct, labels, num_classes=3):
    """Logits whose argmax is the label where ``correct`` and another class elsewhere."""
    predicted = torch.where(torch.as_tensor(correct), labels, (labels + 1) % num_classes)
    return torch.nn.functional.one_hot(predicted, num_classes).float()


def test_counter_counts_learned_to_forgotten_transitions():
    # One model, three examples, presented once per "epoch" in turn.
    history = {
        0: [0, 1, 0, 1, 0],  # learned, forgotten twice
        1: [1, 1, 1, 1, 1],  # learned at once, never forgotten
        2: [0, 0, 0, 0, 0],  # never learned
    }
    labels = torch.tensor([0, 1, 2])
    counter = ForgettingCounter(1, 3, torch.device("cpu"))
    for epoch in range(5):
        for example in (2, 0, 1):
            index = torch.tensor([[example]])
            correct = torch.tensor([[bool(history[example][epoch])]])
            counter(logits_for(correct, labels[index]), labels[index], index)
    assert counter.scores(epochs=5).tolist() == [[2.0, 0.0, 6.0]]


def test_counter_keeps_models_apart():
    counter = ForgettingCounter(2, 2, torch.device("cpu"))
    labels = torch.tensor([[0, 1], [0, 1]])
    index = torch.tensor([[0, 1], [1, 0]])
    counter(logits_for(torch.tensor([[True, True], [True, False]]), labels, 2), labels, index)
    counter(logits_for(torch.tensor([[False, True], [False, True]]), labels, 2), labels, index)
    # Model 0: example 0 learned then forgotten; model 1: example 1 forgotten.
    assert counter.scores(epochs=2).tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_score_forgetting_ranks_flipped_labels_hard():
    digits = load_dataset("digits")
    assert get_metric("forgetting").function is score_forgetting
    rng = np.random.default_rng(0)
    n = digits.num_train
    flipped = rng.choice(n, size=n // 10, replace=False)
    y = digits.y_train.copy()
    y[flipped] = (y[flipped] + rng.integers(1, 10, size=len(flipped))) % 10
    noisy = replace(digits, y_train=y)
    is_flipped = np.zeros(n, dtype=bool)
    is_flipped[flipped] = True
    scores = score(
        noisy,
        "forgetting",
        ScoringConfig(seeds=2, epochs=6),
        ModelConfig(name="mlp", params={"hidden": 64}),
        TrainConfig(batch_size=32, lr=0.1),
        progress=False,
    )
    meta = scores.metadata
    assert meta["metric"] == "forgetting"
    assert meta["params"]["never_learned_score"] == 7
    assert len(meta["params"]["never_learned"]) == 2
    values = scores.table[["score_seed0", "score_seed1"]].to_numpy()
    # Counts are whole numbers; never-learned examples score 7, above any count (at most 3).
    assert np.all((values == np.round(values)) & (values >= 0))
    assert np.all((values <= 3) | (values == 7))
    assert roc_auc_score(is_flipped, scores.values) > 0.8
