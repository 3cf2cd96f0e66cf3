"""Batch iterators over in-memory arrays for the training loop.

Both loaders yield ``(x, y, index)`` batches in the order a sampler gives, so the
loop can look up per-example data (cached teacher logits) by ``index``.
``memory`` slices whole batches from tensors (no per-example Python calls, which
dominate for small inputs); ``torch`` is a plain ``DataLoader`` with the sampler;
``ffcv`` reads a ``.beton`` (see :mod:`datapruning.data.ffcv`) in the sampler's
order, so all three yield the same examples in the same order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

if TYPE_CHECKING:
    from datapruning.data.ffcv import FFCVBatches
    from datapruning.data.sources import Dataset

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
    kind: str,
    x: torch.Tensor,
    y: torch.Tensor,
    sampler: Sampler[int],
    batch_size: int,
    *,
    dataset: Dataset | None = None,
    beton: str | os.PathLike[str] | None = None,
    device: torch.device | None = None,
    pin_memory: bool = False,
) -> TensorBatches | DataLoader[Batch] | FFCVBatches:
    """Batches of ``(x, y, index)`` in ``sampler``'s order.

    ``memory`` and ``torch`` batches are on ``x``'s device; ``pin_memory``
    pins the ``torch`` loader's batches so that the copy to a GPU need not
    block the host. ``ffcv`` batches go to ``device`` (default: ``x``'s); it
    needs ``dataset`` (whose fingerprint the beton must carry) and reads
    ``beton``, or without it a beton written once into the cache directory
    (:func:`datapruning.data.ffcv.cached_beton`).
    """
    if kind == "memory":
        return TensorBatches(x, y, sampler, batch_size)
    if kind == "ffcv":
        from datapruning.data.ffcv import cached_beton, make_loader
        from datapruning.data.samplers import IndexSampler

        if dataset is None or not isinstance(sampler, IndexSampler):
            raise TypeError("the ffcv loader needs the dataset and an IndexSampler")
        path = beton if beton is not None else cached_beton(dataset)
        return make_loader(
            path,
            batch_size=batch_size,
            sampler=sampler,
            device=device if device is not None else x.device,
            fingerprint=dataset.fingerprint,
        )
    tensors = TensorDataset(x, y, torch.arange(len(y)))
    return DataLoader(tensors, sampler=sampler, batch_size=batch_size, pin_memory=pin_memory)
