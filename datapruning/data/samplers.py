"""Samplers that drop into any ``torch.utils.data.DataLoader``, DDP included.

``DataLoader(dataset, sampler=SubsetSampler(indices), batch_size=...)`` trains on
a selected subset; ``sampler=RS2Sampler(len(dataset), 0.1)`` trains on a fresh
10% every epoch. Call ``sampler.set_epoch(epoch)`` before each epoch, the way
``DistributedSampler`` users already do.

Under DDP every rank builds the same sampler (same seed): each epoch's indices
depend only on ``(seed, epoch)``, so all ranks agree on them, and each rank keeps
a disjoint, equal-sized share. As in ``DistributedSampler``, the epoch is padded
by repeating its first indices (``drop_last=False``) or truncated
(``drop_last=True``) to a multiple of the number of ranks. ``len(sampler)`` is
what this rank yields per epoch, so schedules built on ``len(loader)`` are right.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from datapruning.errors import DataPruningError


def as_index_array(
    indices: Sequence[int] | np.ndarray, num_samples: int | None = None
) -> np.ndarray:
    """Validate ``indices`` (integers, no duplicates, in range) and return them as int64."""
    array = np.asarray(indices)
    if array.ndim != 1:
        raise DataPruningError(f"indices must be a 1-D list of integers, got shape {array.shape}")
    if array.size == 0:
        raise DataPruningError("indices are empty; keep at least one example")
    if not np.issubdtype(array.dtype, np.integer):
        raise DataPruningError(f"indices must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.min() < 0 or (num_samples is not None and array.max() >= num_samples):
        bound = f"0..{num_samples - 1}" if num_samples is not None else "non-negative"
        raise DataPruningError(
            f"indices must lie in {bound}; found {int(array.min())}..{int(array.max())}"
        )
    if len(np.unique(array)) != len(array):
        raise DataPruningError("indices contain duplicates; give each example once")
    return array


def check_fraction(fraction: float) -> float:
    if not 0 < fraction <= 1:
        raise DataPruningError(f"fraction {fraction} must lie in (0, 1]")
    return float(fraction)


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """Number of ranks and this rank: the arguments, else the process group, else 1 and 0."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if num_replicas < 1:
        raise DataPruningError(f"num_replicas must be at least 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise DataPruningError(f"rank {rank} must lie in 0..{num_replicas - 1}")
    return num_replicas, rank


class IndexSampler(Sampler[int], ABC):
    """Base class: an epoch's dataset indices, shared out across DDP ranks.

    Subclasses implement :meth:`epoch_indices` (a pure function of the seed and
    ``self.epoch``) and :attr:`epoch_size` (the same for every epoch).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.seed = int(seed)
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.drop_last = drop_last
        self.epoch = 0

    @property
    @abstractmethod
    def epoch_size(self) -> int:
        """Indices per epoch over all ranks, before padding or dropping."""

    @abstractmethod
    def epoch_indices(self) -> np.ndarray:
        """This epoch's indices, all ranks together, in order."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def num_per_rank(self) -> int:
        if self.drop_last:
            count = self.epoch_size // self.num_replicas
            if count == 0:
                raise DataPruningError(
                    f"{self.epoch_size} indices per epoch cannot give each of "
                    f"{self.num_replicas} ranks one with drop_last; keep more data"
                )
            return count
        return math.ceil(self.epoch_size / self.num_replicas)

    def rank_indices(self) -> np.ndarray:
        """This rank's share of the epoch: every ``num_replicas``-th index from ``rank``."""
        indices = self.epoch_indices()
        total = self.num_per_rank * self.num_replicas
        if total > len(indices):  # pad by cycling from the start, like DistributedSampler
            indices = np.resize(indices, total)
        return indices[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_indices().tolist())

    def __len__(self) -> int:
        return self.num_per_rank

    def state_dict(self) -> dict[str, Any]:
        # Epochs are pure functions of (seed, epoch): this is all a resume needs.
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["seed"]) != self.seed:
            raise DataPruningError(
                f"sampler state has seed {state['seed']}, this sampler {self.seed}; "
                "resume with the same seed"
            )
        self.set_epoch(state["epoch"])


class SubsetSampler(IndexSampler):
    """Yield a fixed subset of dataset indices, in a new seeded order every epoch.

    Args:
        indices: dataset indices to keep (unique, non-negative integers).
        shuffle: reshuffle the subset every epoch (else yield it as given).
        seed: the order of epoch ``e`` depends only on ``(seed, e)``.
        num_samples: the dataset size, to check the indices against (optional).
        num_replicas, rank, drop_last: DDP sharing, as in ``DistributedSampler``.
    """

    def __init__(
        self,
        indices: Sequence[int] | np.ndarray,
        shuffle: bool = True,
        seed: int = 0,
        *,
        num_samples: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        self.indices = as_index_array(indices, num_samples)
        self.shuffle = shuffle

    @classmethod
    def from_scores(
        cls,
        path: str | os.PathLike[str],
        keep: float,
        strategy: str = "hard",
        seed: int = 0,
        *,
        fingerprint: str | None = None,
        **sampler_kwargs: Any,
    ) -> SubsetSampler:
        """The subset a scores file selects: ``keep`` of the examples by ``strategy``.

        Pass the training set's ``fingerprint`` (``Dataset.fingerprint``) to refuse
        scores computed on another dataset.
        """
        from datapruning.scores import Scores

        scores = Scores.load(path, fingerprint=fingerprint)
        return cls(scores.select(keep, strategy, seed), seed=seed, **sampler_kwargs)

    @property
    def epoch_size(self) -> int:
        return len(self.indices)

    def epoch_indices(self) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        rng = np.random.default_rng([self.seed, self.epoch])
        return self.indices[rng.permutation(len(self.indices))]


class RS2Sampler(IndexSampler):
    """Repeated Sampling of Random Subsets (Okanovic et al. 2023): a fresh subset every epoch.

    Each epoch yields ``ceil(fraction * num_samples)`` distinct indices.
    Without replacement it walks a seeded permutation of the dataset in chunks
    of that size and reshuffles when the permutation is used up, so every
    example is seen at least once in every ``ceil(1 / fraction)`` epochs of a
    walk (``epochs_per_pass``). When the last chunk
    of a permutation is short, it is topped up with examples drawn from the rest
    of that permutation, which keeps every epoch the same length. With
    ``replacement=True`` every epoch is an independent uniform draw.

    ``stratify`` (one class label per example) draws each class in proportion
    to its size (largest-remainder rounding), each class walking its own
    permutation; a class too small to get one slot per epoch is then left out. Epoch ``e`` depends only on ``(seed, e)``, so ranks agree and a
    resumed run sees the same subsets.
    """

    def __init__(
        self,
        num_samples: int,
        fraction: float,
        replacement: bool = False,
        stratify: Sequence[int] | np.ndarray | None = None,
        seed: int = 0,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        if num_samples < 1:
            raise DataPruningError(f"num_samples must be at least 1, got {num_samples}")
        self.num_samples = int(num_samples)
        self.fraction = check_fraction(fraction)
        self.replacement = replacement
        # ceil, so that ceil(N / subset_size) <= ceil(1 / fraction): full coverage in time.
        self.subset_size = max(1, math.ceil(self.fraction * self.num_samples - 1e-9))
        if stratify is None:
            self._groups = [np.arange(self.num_samples)]
            self._sizes = [self.subset_size]
        else:
            labels = np.asarray(stratify)
            if labels.shape != (self.num_samples,):
                raise DataPruningError(
                    f"stratify needs one label per example ({self.num_samples}), "
                    f"got shape {labels.shape}"
                )
            self._groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
            self._sizes = _proportional([len(g) for g in self._groups], self.subset_size)

    @property
    def epoch_size(self) -> int:
        return self.subset_size

    @property
    def epochs_per_pass(self) -> int:
        """Epochs in which every drawn class's examples are all seen (without replacement)."""
        return max(
            math.ceil(len(group) / size)
            for group, size in zip(self._groups, self._sizes, strict=True)
            if size
        )

    def epoch_indices(self) -> np.ndarray:
        parts = [
            self._draw(group, size, stream)
            for stream, (group, size) in enumerate(zip(self._groups, self._sizes, strict=True))
            if size
        ]
        indices = np.concatenate(parts)
        if len(parts) > 1:  # interleave the classes
            indices = indices[
                np.random.default_rng([self.seed, self.epoch]).permutation(len(indices))
            ]
        return indices

    def _draw(self, group: np.ndarray, size: int, stream: int) -> np.ndarray:
        if self.replacement:
            rng = np.random.default_rng([self.seed, stream, self.epoch])
            return group[rng.choice(len(group), size=size, replace=False)]
        chunks = math.ceil(len(group) / size)
        walk, chunk = divmod(self.epoch, chunks)
        rng = np.random.default_rng([self.seed, stream, walk])
        order = group[rng.permutation(len(group))]
        taken = order[chunk * size : (chunk + 1) * size]
        short = size - len(taken)
        if short:
            earlier = order[: chunk * size]
            taken = np.concatenate([taken, earlier[rng.choice(len(earlier), short, replace=False)]])
        return taken


def _proportional(counts: list[int], total: int) -> list[int]:
    """Split ``total`` over groups in proportion to ``counts`` (largest remainder)."""
    shares = np.asarray(counts, dtype=np.float64) * total / sum(counts)
    sizes = np.floor(shares).astype(np.int64)
    leftover = total - int(sizes.sum())
    sizes[np.argsort(-(shares - sizes), kind="stable")[:leftover]] += 1
    return [min(int(s), c) for s, c in zip(sizes, counts, strict=True)]
