"""Training inputs read on demand: the streaming half of a :class:`~datapruning.data.sources.Dataset`.

A training set is either a float32 array in memory (small sets; every loader
slices tensors of it, the fast path) or an :class:`ExampleSource` that reads
examples when asked:

- :class:`ArrayExamples`: an array kept in its storage dtype (CIFAR batches as
  uint8: 150 MB instead of 600 MB as float32 for CIFAR-10);
- :class:`BetonExamples` (:mod:`datapruning.data.beton`): rows of a ``.beton``
  read through a memory map (page cache, not the process heap);
- :class:`ImageFileExamples`: an image folder, each image decoded when read;
- :class:`TorchExamples`: any ``torch.utils.data.Dataset`` of ``(x, y)`` items.

Images stay uint8 in storage and in transit and become float32 (``p / 255``)
only in the batch, so a batch of a streaming set equals the same rows of the
in-memory float32 set bit for bit. Labels are always in memory (8 bytes per
example). The test split of every dataset is in memory: it is small and read
whole at every evaluation.

Code that reads training inputs takes :func:`train_rows` of a dataset: the
tensor itself for in-memory data, else a :class:`SourceRows` view with the
tensor operations the readers use (``rows[index]``, ``rows.split(n)``,
``len``, ``shape``), so the scoring and teacher passes read a streaming set in
batches with bounded memory and an in-memory one exactly as before.

On 200,000 generated 32x32 images (``bench/results/scale.json``) every CLI step
stayed under 2 GiB peak RSS: EL2N scoring from a beton peaked at 1.57 GiB, 0.88
GiB of it the beton's mapped file pages; the same set as float32 is 2.4 GB.
Reading in the main process is the slow path (8,711 images/s from a beton,
2,559 from PNG files, against 104,537 slicing an in-memory tensor); FFCV's
loader over the beton read 193,714: use ``train.loader: ffcv`` at scale.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datapruning.data.fingerprint import CHUNK, canonical, fingerprint_chunks, is_current
from datapruning.errors import DataPruningError


class ExampleSource(ABC):
    """Inputs of a training set, read by index; subclasses say how they are stored."""

    # The dtype rows are stored (and read) in: uint8 images, else float32.
    dtype: np.dtype = np.dtype(np.float32)

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def example_shape(self) -> tuple[int, ...]:
        """One example's shape, as a batch holds it (images: (3, H, W))."""

    @abstractmethod
    def read(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` in their storage dtype, shape ``(len(indices), *example_shape)``."""

    def identity(self) -> str | None:
        """What identifies the stored files (paths, sizes, mtimes), to cache the fingerprint
        under; None: nothing to key a cache by (computed in every process)."""
        return None

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.example_shape)

    def __getitem__(self, index: Any) -> Any:
        """``source[a:b]``: a lazy view of those rows (a shard's); ``source[indices]``: those
        rows as float32, as numpy indexing of the in-memory array gives them."""
        if isinstance(index, slice):
            return SliceExamples(self, range(len(self))[index])
        return self.read_float(np.asarray(index, dtype=np.int64))

    def read_float(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` as float32 (uint8 pixels -> p / 255): what a batch holds."""
        return canonical(self.read(np.asarray(indices, dtype=np.int64)))

    def chunks(self, size: int = CHUNK) -> Iterator[np.ndarray]:
        """Consecutive rows in storage dtype, ``size`` at a time."""
        for start in range(0, len(self), size):
            yield self.read(np.arange(start, min(start + size, len(self))))

    def fingerprint(self, labels: np.ndarray) -> str:
        """The training set's fingerprint: computed once per source object, and cached on
        disk by :meth:`identity` when there is one."""
        key = hashlib.blake2b(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()
        memo: dict[str, str] = self.__dict__.setdefault("_fingerprints", {})
        if key not in memo:
            memo[key] = self._fingerprint(labels)
        return memo[key]

    def _fingerprint(self, labels: np.ndarray) -> str:
        identity = self.identity()
        cache = _fingerprint_cache(identity, labels) if identity is not None else None
        if cache is not None and cache.is_file():
            try:
                found = json.loads(cache.read_text()).get("fingerprint")
            except (OSError, ValueError, AttributeError):
                found = None
            if is_current(found):
                return str(found)
        value = fingerprint_chunks(self.chunks(), labels, self.example_shape)
        if cache is not None:
            from datapruning._io import write_json

            # A read-only cache: the fingerprint is in hand anyway.
            with contextlib.suppress(OSError, DataPruningError):
                cache.parent.mkdir(parents=True, exist_ok=True)
                write_json(cache, {"fingerprint": value, "identity": identity})
        return value


def _fingerprint_cache(identity: str, labels: np.ndarray) -> Path:
    from datapruning._io import cache_dir

    digest = hashlib.blake2b(identity.encode(), digest_size=16)
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return cache_dir() / "fingerprint" / f"{digest.hexdigest()}.json"


def file_identity(paths: Sequence[Path]) -> str:
    """Paths, sizes and modification times of ``paths``: changes when any file does."""
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class ArrayExamples(ExampleSource):
    """Rows of an array kept in its storage dtype (uint8 images, or float32)."""

    def __init__(self, array: np.ndarray) -> None:
        if array.dtype != np.uint8:
            array = np.asarray(array, dtype=np.float32)
        self.array = array
        self.dtype = array.dtype

    def __len__(self) -> int:
        return len(self.array)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.array[indices]

    def chunks(self, size: int = CHUNK) -> Iterator[np.ndarray]:
        for start in range(0, len(self), size):
            yield self.array[start : start + size]


class SliceExamples(ExampleSource):
    """Rows ``rows`` (a range) of another source, read from it on demand."""

    def __init__(self, source: ExampleSource, rows: range) -> None:
        self.source, self.rows = source, rows
        self.dtype = source.dtype

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return self.source.example_shape

    def read(self, indices: np.ndarray) -> np.ndarray:
        positions = np.asarray(indices, dtype=np.int64)
        return self.source.read(self.rows.start + self.rows.step * positions)


class ImageFileExamples(ExampleSource):
    """An image folder's files, each decoded (and resized to ``size``) when read, as uint8."""

    dtype = np.dtype(np.uint8)

    def __init__(self, files: Sequence[Path], size: int) -> None:
        self.files, self.size = list(files), size

    def __len__(self) -> int:
        return len(self.files)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return (3, self.size, self.size)

    def read(self, indices: np.ndarray) -> np.ndarray:
        from datapruning.data.files import decode_image

        out = np.empty((len(indices), 3, self.size, self.size), dtype=np.uint8)
        for row, i in enumerate(np.asarray(indices).tolist()):
            out[row] = decode_image(self.files[i], self.size)
        return out

    def identity(self) -> str:
        return f"imagefolder|{self.size}|{file_identity(self.files)}"


class TorchExamples(ExampleSource):
    """A ``torch.utils.data.Dataset`` whose items are ``(x, y)``, read item by item.

    Inputs keep the dtype the dataset returns when it is uint8 (pixels), else
    become float32. The labels are read once when the dataset is wrapped
    (from ``dataset.targets`` when it has them, as torchvision's datasets do).
    """

    def __init__(self, dataset: Any, first: Any) -> None:
        self.dataset = dataset
        x = _numpy(first)
        self.dtype = np.dtype(np.uint8) if x.dtype == np.uint8 else np.dtype(np.float32)
        self._shape = tuple(x.shape)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return self._shape

    def read(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self._shape), dtype=self.dtype)
        for row, i in enumerate(np.asarray(indices).tolist()):
            x = _numpy(self.dataset[i][0])
            if x.shape != self._shape:
                raise DataPruningError(
                    f"dataset item {i} has input shape {x.shape}; item 0 has {self._shape}: "
                    "give every example the same shape"
                )
            out[row] = x
        return out


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class SourceRows:
    """The tensor operations training-input readers use, over an :class:`ExampleSource`.

    ``rows[index]`` (an int, a slice, or an index array/tensor of any shape) and
    ``rows.split(n)`` return float32 tensors on ``device`` read from the source,
    never the whole set.
    """

    def __init__(self, source: ExampleSource, device: torch.device | str = "cpu") -> None:
        self.source, self.device = source, torch.device(device)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.source.shape)

    def dim(self) -> int:
        return len(self.source.shape)

    def to(self, device: torch.device | str) -> SourceRows:
        return SourceRows(self.source, device)

    def _tensor(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(canonical(rows)).to(self.device)

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, int | np.integer):
            return self._tensor(self.source.read(np.array([int(index)])))[0]
        if isinstance(index, slice):
            flat = np.arange(len(self))[index]
            return self._tensor(self.source.read(flat))
        index = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        rows = self.source.read(index.reshape(-1).astype(np.int64))
        return self._tensor(rows).reshape(*index.shape, *self.source.example_shape)

    def split(self, size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), size):
            yield self[start : start + size]


def as_rows(
    x: np.ndarray | ExampleSource, device: torch.device | str = "cpu"
) -> torch.Tensor | SourceRows:
    """Inputs for a reader: a float32 tensor when ``x`` is an array in memory (the fast
    path, as before), else a :class:`SourceRows` view that reads batches from the source."""
    if isinstance(x, ExampleSource):
        return SourceRows(x, device)
    return torch.as_tensor(x, device=device)


def train_rows(dataset: Any, device: torch.device | str = "cpu") -> torch.Tensor | SourceRows:
    """``dataset``'s training inputs for a reader (:func:`as_rows`)."""
    return as_rows(dataset.x_train, device)


def check_finite(x: np.ndarray | ExampleSource, what: str = "features") -> None:
    """Refuse NaN or inf inputs, reading a source chunk by chunk (uint8 is always finite)."""
    chunks = [x] if isinstance(x, np.ndarray) else ([] if x.dtype == np.uint8 else x.chunks())
    bad = 0
    for chunk in chunks:
        if not np.all(np.isfinite(chunk)):
            rows = (~np.isfinite(chunk)).reshape(len(chunk), -1).any(axis=1)
            bad += int(np.count_nonzero(rows))
    if bad:
        raise DataPruningError(
            f"{what} contain NaN or inf in {bad} rows; clean or drop those examples first"
        )
