"""FFCV's loader over a beton: ``(x, y, index)`` torch batches for the training loop.

The beton itself (writing, the sidecar, reading rows) is :mod:`datapruning.data.beton`;
this module only loads batches from one.

``make_loader(path, ...)`` yields ``(x, y, index)`` torch batches like
:func:`datapruning.data.loaders.make_batches`:

- ``indices=`` a fixed subset, through FFCV's own ``Loader(indices=...)``
  (its random order, reseeded every epoch; DDP through ``distributed=True``);
- ``rs2=`` a fraction (or an :class:`RS2Sampler`): a fresh subset every epoch,
  the very indices ``RS2Sampler`` draws for the same seed;
- ``sampler=`` any :class:`IndexSampler`: the loader yields exactly
  ``sampler.rank_indices()`` each epoch, so the FFCV and torch paths of a run
  see the same examples in the same order.

FFCV is optional: importing this module does not import ``ffcv``; the
functions raise :class:`DataPruningError` when it is not installed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from datapruning.data.beton import keep_torch_threads, read_meta, require_ffcv
from datapruning.data.samplers import IndexSampler, RS2Sampler, as_index_array
from datapruning.errors import DataPruningError

if TYPE_CHECKING:
    from ffcv.loader import Loader

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@functools.cache
def _sampler_order_class() -> type:
    # Defined on first use: the base class lives in ffcv, which stays optional.
    from ffcv.traversal_order.base import TraversalOrder

    class SamplerOrder(TraversalOrder):
        """FFCV traversal order that yields an :class:`IndexSampler`'s indices."""

        def __init__(self, loader: Loader, sampler: IndexSampler) -> None:
            super().__init__(loader)
            self.sampler = sampler

        def sample_order(self, epoch: int) -> Sequence[int]:
            self.sampler.set_epoch(epoch)
            return self.sampler.rank_indices()

    return SamplerOrder


class FFCVBatches:
    """``(x, y, index)`` torch batches from an FFCV ``Loader``.

    ``x`` is float32: images as (B, 3, H, W) in [0, 1], arrays in their stored
    shape; ``y`` and ``index`` are int64 vectors. Every tensor is the batch's
    own (FFCV reuses its buffers a few batches later).

    Call :meth:`set_epoch` before each epoch. With a sampler, the sampler's
    epoch decides the order (``sampler.set_epoch`` works too, exactly as in a
    torch DataLoader); without one, FFCV's own counter also advances one epoch
    per pass.
    """

    def __init__(
        self,
        loader: Loader,
        sampler: IndexSampler | None,
        x_field: str,
        device: torch.device,
    ) -> None:
        self.loader, self.sampler, self.x_field, self.device = loader, sampler, x_field, device

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.loader.next_epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        if self.sampler is not None:
            self.loader.next_epoch = self.sampler.epoch
        with keep_torch_threads():
            epoch = iter(self.loader)
        for x, y, index in epoch:
            yield (
                _to_device(_own_float(x.numpy(), self.x_field == "rgb_image"), self.device),
                _to_device(y.reshape(-1), self.device, copy=True),
                _to_device(index.reshape(-1), self.device, copy=True),
            )

    def __len__(self) -> int:
        return len(self.loader)


def _to_device(tensor: torch.Tensor, device: torch.device, copy: bool = False) -> torch.Tensor:
    """``tensor`` on ``device``; to a GPU through pinned memory, without blocking the host."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)  # pin_memory copies
    return tensor.to(device, copy=copy)


def _own_float(x: np.ndarray, image: bool) -> torch.Tensor:
    """A copy of FFCV's buffer as float32; images (B, H, W, 3) uint8 -> (B, 3, H, W) / 255."""
    # numpy, not torch: torch's multi-threaded elementwise kernels ran 20-100x
    # slower here while FFCV's threads held the cores; the values are the same
    # (one correctly rounded float32 division).
    if not image:
        return torch.from_numpy(x.copy())
    out = np.empty((x.shape[0], x.shape[3], x.shape[1], x.shape[2]), dtype=np.float32)
    np.divide(x.transpose(0, 3, 1, 2), np.float32(255), out=out)
    return torch.from_numpy(out)


def make_loader(
    path: str | os.PathLike[str],
    *,
    batch_size: int,
    indices: Sequence[int] | np.ndarray | None = None,
    rs2: float | RS2Sampler | None = None,
    sampler: IndexSampler | None = None,
    shuffle: bool = True,
    seed: int = 0,
    distributed: bool = False,
    drop_last: bool = False,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    fingerprint: str | None = None,
    os_cache: bool = True,
    batches_ahead: int = 3,
) -> FFCVBatches:
    """An FFCV loader over the beton at ``path`` yielding ``(x, y, index)`` batches.

    Args:
        path: a beton written by :func:`to_beton`.
        batch_size: examples per batch.
        indices: train on this fixed subset (``Loader(indices=...)``).
        rs2: a fresh random subset every epoch: a fraction in (0, 1] (an
            ``RS2Sampler`` with ``seed``, without replacement) or a sampler.
        sampler: yield exactly this sampler's ``rank_indices()`` every epoch.
        shuffle: reshuffle a fixed subset (or the whole set) every epoch.
        seed: seed of the order (and of the RS2 draws).
        distributed: share each epoch across the ranks of the initialised
            torch.distributed process group (like ``DistributedSampler``).
        drop_last: drop the last, partial batch of each epoch.
        num_workers: FFCV decoding threads (default: all cores).
        device: where the batches go.
        fingerprint: refuse a beton made from another training set.
        os_cache, batches_ahead: passed to ``ffcv.loader.Loader``.

    Give at most one of ``indices``, ``rs2`` and ``sampler``; none means the
    whole training set.
    """
    require_ffcv()
    if batch_size < 1:
        raise DataPruningError(f"batch_size must be at least 1, got {batch_size}")
    given = [
        name
        for name, value in (("indices", indices), ("rs2", rs2), ("sampler", sampler))
        if value is not None
    ]
    if len(given) > 1:
        raise DataPruningError(f"give at most one of indices, rs2, sampler; got {', '.join(given)}")
    meta = read_meta(path, fingerprint)
    num_samples = int(meta["num_samples"])
    # Imported after the checks above: ffcv (numba) takes seconds to import, a bad beton
    # or sidecar should not wait for it.
    with keep_torch_threads():
        from ffcv.fields.decoders import IntDecoder, NDArrayDecoder, SimpleRGBImageDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import ToTensor

    if distributed and not (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    ):
        raise DataPruningError(
            "distributed=True needs an initialised torch.distributed process group; "
            "call init_process_group first or pass a sampler with num_replicas and rank"
        )
    ranks: dict[str, Any] = {} if distributed else {"num_replicas": 1, "rank": 0}
    if rs2 is not None:
        sampler = (
            rs2 if isinstance(rs2, RS2Sampler) else RS2Sampler(num_samples, rs2, seed=seed, **ranks)
        )
    if isinstance(sampler, RS2Sampler) and sampler.num_samples != num_samples:
        raise DataPruningError(
            f"RS2Sampler draws from {sampler.num_samples} examples; the beton holds {num_samples}"
        )
    subset = None if indices is None else as_index_array(indices, num_samples)

    x_field = meta["x_field"]
    pipelines: dict[str, Any] = {
        "x": [SimpleRGBImageDecoder() if x_field == "rgb_image" else NDArrayDecoder(), ToTensor()],
        "y": [IntDecoder(), ToTensor()],
        "index": [IntDecoder(), ToTensor()],
    }
    with keep_torch_threads():
        loader = Loader(
            str(path),
            batch_size=batch_size,
            num_workers=num_workers or os.cpu_count() or 1,
            os_cache=os_cache,
            order=OrderOption.RANDOM if shuffle else OrderOption.SEQUENTIAL,
            distributed=distributed and sampler is None,
            seed=seed,
            indices=subset,
            pipelines=pipelines,
            drop_last=drop_last,
            batches_ahead=batches_ahead,
        )
    if sampler is not None:
        first = sampler.rank_indices()
        if first.min() < 0 or first.max() >= num_samples:
            raise DataPruningError(
                f"the sampler yields indices up to {int(first.max())}; "
                f"the beton holds {num_samples} examples"
            )
        # ffcv 1.0.2 refuses a custom order in the constructor; swap it in, and
        # recompute the first epoch, from which the Loader takes its length.
        loader.traversal_order = _sampler_order_class()(loader, sampler)
        loader.first_traversal_order = loader.traversal_order.sample_order(sampler.epoch)
        loader.next_epoch = sampler.epoch
    return FFCVBatches(loader, sampler, x_field, torch.device(device))
