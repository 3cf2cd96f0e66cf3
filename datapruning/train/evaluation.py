"""Evaluation helpers shared by the training loop, KD teachers and the scoring models.

They live apart from the loop so that :mod:`datapruning.train.kd` and the
scoring ensemble can predict without importing the loop (which imports them).
Evaluation always runs in float32 and in eval mode; the loop times it on its own
clock, never on the training clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """``modules`` in eval mode (dropout off, batch norm on running stats), then as they were."""
    was_training = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, was_training, strict=True):
            module.train(mode)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for ``x`` in eval mode, in batches."""
    with eval_mode(model):
        return torch.cat([model(chunk) for chunk in x.split(batch_size)])


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    logits = predict(model, x, max(batch_size, 256))
    loss = F.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy
