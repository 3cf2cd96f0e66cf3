"""EL2N scores (Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data Diet").

EL2N(x, y) = || softmax(f(x)) - onehot(y) ||_2, computed with models trained
only briefly (the paper scores at epoch ~20 of 200 on CIFAR-10) and averaged over
several independently initialised models (the paper uses 10; the default here is
smaller for CPU and configurable). Examples with a large error early in training
are the hard (or mislabeled) ones.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from datapruning import __version__
from datapruning.config import (
    DataConfig,
    ModelConfig,
    ScoringConfig,
    SparsityConfig,
    TrainConfig,
)
from datapruning.data.sources import Dataset
from datapruning.scores import Scores
from datapruning.train.loop import predict, train


def el2n(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm of the softmax error vector."""
    probs = F.softmax(logits, dim=1)
    return torch.linalg.vector_norm(probs - F.one_hot(labels, probs.shape[1]).to(probs), dim=1)


def score_el2n(
    dataset: Dataset,
    scoring: ScoringConfig | None = None,
    model_cfg: ModelConfig | None = None,
    train_cfg: TrainConfig | None = None,
    progress: bool | None = None,
) -> Scores:
    """Train ``scoring.seeds`` models for ``scoring.epochs`` epochs each and average EL2N."""
    scoring = scoring or ScoringConfig()
    model_cfg = model_cfg or ModelConfig()
    train_cfg = train_cfg or TrainConfig()
    start = time.perf_counter()
    x_train = torch.as_tensor(dataset.x_train)
    y_train = torch.as_tensor(dataset.y_train)
    table = pd.DataFrame({"index": np.arange(dataset.num_train), "label": dataset.y_train})
    seeds = list(range(scoring.seeds))
    for seed in tqdm(
        seeds, desc="el2n", unit="model", disable=None if progress is None else not progress
    ):
        # Scoring models are dense and see every example for scoring.epochs epochs,
        # whatever the config's data mode, step budget or sparsity say about students.
        cfg = train_cfg.model_copy(
            update={
                "epochs": scoring.epochs,
                "steps": None,
                "data": DataConfig(),
                "seed": seed,
                "eval_every": 0,
                "targets": [],
                "reference": None,
                "sparsity": SparsityConfig(),
            }
        )
        model = train(dataset, model_cfg, cfg, progress=False).model
        with torch.no_grad():
            table[f"score_seed{seed}"] = el2n(predict(model, x_train), y_train).numpy()
    table["score"] = table[[f"score_seed{s}" for s in seeds]].mean(axis=1)
    table = table[["index", "score", "label", *[f"score_seed{s}" for s in seeds]]]
    metadata = {
        "metric": "el2n",
        "params": {
            "epochs": scoring.epochs,
            "seeds": scoring.seeds,
            "train": train_cfg.model_dump(mode="json"),
        },
        "dataset": {
            "name": dataset.name,
            "params": dict(dataset.params),
            "fingerprint": dataset.fingerprint,
            "num_train": dataset.num_train,
        },
        "model": {"name": model_cfg.name or dataset.default_model, "params": model_cfg.params},
        "seeds": seeds,
        "seconds": time.perf_counter() - start,
        "version": __version__,
    }
    return Scores(table, metadata)
