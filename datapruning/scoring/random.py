"""Random scores: uniform draws, the baseline every metric must beat.

Selecting the hardest ``f`` of random scores is a uniform random subset, so a
pipeline run with ``random`` measures what pruning by a real metric adds.
"""

from __future__ import annotations

import time

import numpy as np

from datapruning.scores import Scores
from datapruning.scoring._common import MetricJob, build_scores


def score_random(job: MetricJob) -> Scores:
    """One uniform [0, 1) column per seed (seeds 0..scoring.seeds-1), averaged."""
    dataset, scoring = job.dataset, job.scoring
    start = time.perf_counter()
    num_examples = len(dataset.x_train)
    per_seed = {
        seed: np.random.default_rng(seed).random(num_examples) for seed in range(scoring.seeds)
    }
    return build_scores(
        dataset,
        "random",
        per_seed,
        params={"seeds": scoring.seeds, "distribution": "uniform[0, 1)"},
        model=None,
        seconds=time.perf_counter() - start,
    )
