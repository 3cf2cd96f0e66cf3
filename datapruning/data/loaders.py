"""Batch iterators over in-memory arrays for the training loop.

Both loaders yield ``(x, y, index)`` batches in the order a sampler gives, so the
loop can look up per-example data (cached teacher logits) by ``index``.
``memory`` slices whole batches from tensors (no per-example Python calls, which
dominate for small inputs); ``torch`` is a plain ``DataLoader`` with the sampler.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class TensorBatches:
    """Slice batches of ``(x, y, index)`` from tensors in the sampler's order."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, sampler: Sampler[int], batch_size: int
    ) -> None:
        self.x, self.y, self.sampler, self.batch_size = x, y, sampler, batch_size

    def __iter__(self) -> Iterator[Batch]:
        order = torch.as_tensor(np.fromiter(iter(self.sampler), dtype=np.int64))
        for batch in order.split(self.batch_size):
            yield self.x[batch], self.y[batch], batch

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)  # type: ignore[arg-type]


def make_batches(
    kind: str, x: torch.Tensor, y: torch.Tensor, sampler: Sampler[int], batch_size: int
) -> TensorBatches | DataLoader[Batch]:
    if kind == "memory":
        return TensorBatches(x, y, sampler, batch_size)
    dataset = TensorDataset(x, y, torch.arange(len(y)))
    return DataLoader(dataset, sampler=sampler, batch_size=batch_size)
