"""EL2N scores (Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data Diet").

EL2N(x, y) = || softmax(f(x)) - onehot(y) ||_2, computed with models trained
only briefly (the paper scores at epoch ~20 of 200 on CIFAR-10) and averaged over
several independently initialised models (the paper uses 10; the default here is
smaller for CPU and configurable). Examples with a large error early in training
are the hard (or mislabeled) ones. The scoring models train through the shared
driver (:mod:`datapruning.scoring.driver`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from datapruning.scores import Scores
from datapruning.scoring._common import MetricJob
from datapruning.scoring.driver import score_with_models
from datapruning.scoring.ensemble import Ensemble


def el2n(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm of the softmax error vector (over the last dim)."""
    probs = F.softmax(logits, dim=-1)
    return torch.linalg.vector_norm(probs - F.one_hot(labels, probs.shape[-1]).to(probs), dim=-1)


def _el2n_of(ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = ensemble.predict(x)
    return el2n(logits, y.expand(len(ensemble), -1))


def score_el2n(job: MetricJob) -> Scores:
    """Train ``scoring.seeds`` models for ``scoring.epochs`` epochs each and average EL2N."""
    return score_with_models("el2n", _el2n_of, job)
