import numpy as np

from datapruning.config import ScoringConfig
from datapruning.data.sources import load_dataset
from datapruning.scoring import get_metric, score
from datapruning.scoring.random import score_random


def test_random_scores_are_seeded_uniform_draws():
    digits = load_dataset("digits")
    assert get_metric("random").function is score_random
    scores = score(digits, "random", ScoringConfig(seeds=3))
    table = scores.table
    assert list(table.columns) == [
        "index",
        "score",
        "label",
        "score_seed0",
        "score_seed1",
        "score_seed2",
    ]
    np.testing.assert_array_equal(
        table["score_seed1"], np.random.default_rng(1).random(digits.num_train)
    )
    assert table["score_seed0"].min() >= 0 and table["score_seed0"].max() < 1
    assert scores.metadata["metric"] == "random" and scores.metadata["seeds"] == [0, 1, 2]
    np.testing.assert_array_equal(
        score(digits, "random", ScoringConfig(seeds=3)).values, scores.values
    )
