"""Batch iterators over in-memory arrays for the training loop.

Both loaders yield ``(x, y, index)`` batches in the order a sampler gives, so the
loop can look up per-example data (cached teacher logits) by ``index``.
``memory`` slices whole batches from tensors (no per-example Python calls, which
dominate for small inputs); ``torch`` is a plain ``DataLoader`` with the sampler;
``ffcv`` reads a ``.beton`` (see :mod:`datapruning.data.ffcv`) in the sampler's
order, so all three yield the same examples in the same order.

A streaming training set (:class:`~datapruning.data.stream.ExampleSource`) goes
through :func:`make_source_batches` instead: ``memory`` reads each batch from
the source in the main process, ``torch`` reads whole batches in
``train.workers`` DataLoader processes, ``ffcv`` reads the beton the set came
from (or one written once, example by example, into the cache). Rows travel in
their storage dtype (uint8 images) and become float32 (``p / 255``) on the
device, so every loader yields the in-memory path's batches bit for bit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from datapruning.data.stream import ExampleSource

if TYPE_CHECKING:
    from datapruning.data.dataset import Dataset
    from datapruning.data.ffcv import FFCVBatches

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
    (:func:`datapruning.data.beton.cached_beton`).
    """
    if kind == "memory":
        return TensorBatches(x, y, sampler, batch_size)
    if kind == "ffcv":
        from datapruning.data.beton import cached_beton
        from datapruning.data.ffcv import make_loader
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


def _on_device(rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Storage rows -> float32 on ``device``; uint8 pixels travel as uint8 and become p / 255
    there (one IEEE division, as the in-memory float32 arrays were made)."""
    if device.type == "cuda":
        rows = rows.pin_memory().to(device, non_blocking=True)
    else:
        rows = rows.to(device)
    if rows.dtype == torch.uint8:
        return rows.to(torch.float32).div_(255)
    return rows


class SourceBatches:
    """``(x, y, index)`` batches read from an :class:`ExampleSource` in the sampler's order."""

    def __init__(
        self,
        source: ExampleSource,
        y: torch.Tensor,
        sampler: Sampler[int],
        batch_size: int,
        device: torch.device,
    ) -> None:
        self.source, self.y, self.sampler = source, y, sampler
        self.batch_size, self.device = batch_size, device

    def __iter__(self) -> Iterator[Batch]:
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            rows = torch.from_numpy(self.source.read(index))
            index_tensor = torch.from_numpy(index).to(self.device)
            yield _on_device(rows, self.device), self.y[index_tensor], index_tensor

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)  # type: ignore[arg-type]


class _BatchReads(torch.utils.data.Dataset):
    """Map-style dataset whose item is a whole batch: ``source.read(indices)`` in a worker."""

    def __init__(self, source: ExampleSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(self.source.read(index)), torch.from_numpy(index)


class WorkerBatches:
    """``(x, y, index)`` batches read by a torch ``DataLoader`` (``workers`` processes)."""

    def __init__(
        self,
        source: ExampleSource,
        y: torch.Tensor,
        sampler: Sampler[int],
        batch_size: int,
        device: torch.device,
        workers: int,
    ) -> None:
        from torch.utils.data import BatchSampler

        self.sampler, self.y, self.device = sampler, y, device
        self.loader = DataLoader(
            _BatchReads(source),
            sampler=BatchSampler(sampler, batch_size, drop_last=False),
            batch_size=None,
            num_workers=workers,
            persistent_workers=False,
        )

    def __iter__(self) -> Iterator[Batch]:
        for rows, index in self.loader:
            index = index.to(self.device)
            yield _on_device(rows, self.device), self.y[index], index

    def __len__(self) -> int:
        return len(self.loader)


def make_source_batches(
    kind: str,
    dataset: Dataset,
    sampler: Sampler[int],
    batch_size: int,
    *,
    device: torch.device,
    beton: str | os.PathLike[str] | None = None,
    workers: int = 0,
) -> SourceBatches | WorkerBatches | FFCVBatches:
    """Batches of ``(x, y, index)`` of a streaming ``dataset`` in ``sampler``'s order."""
    source = dataset.x_train
    if not isinstance(source, ExampleSource):
        raise TypeError("make_source_batches needs a dataset whose x_train is an ExampleSource")
    y = torch.as_tensor(dataset.y_train, device=device)
    if kind == "memory":
        return SourceBatches(source, y, sampler, batch_size, device)
    if kind == "torch":
        return WorkerBatches(source, y, sampler, batch_size, device, workers)
    from datapruning.data.beton import BetonExamples, cached_beton
    from datapruning.data.ffcv import make_loader
    from datapruning.data.samplers import IndexSampler

    if not isinstance(sampler, IndexSampler):
        raise TypeError("the ffcv loader needs an IndexSampler")
    if beton is None:
        beton = source.path if isinstance(source, BetonExamples) else cached_beton(dataset)
    return make_loader(
        beton,
        batch_size=batch_size,
        sampler=sampler,
        device=device,
        fingerprint=dataset.fingerprint,
    )
