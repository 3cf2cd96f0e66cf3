"""Samplers that drop into any ``torch.utils.data.DataLoader``.

``DataLoader(dataset, sampler=SubsetSampler(indices), batch_size=...)`` trains on
the selected subset: each epoch yields exactly those indices, reshuffled after
``sampler.set_epoch(epoch)`` the way ``DistributedSampler`` users already do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
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


class SubsetSampler(Sampler[int]):
    """Yield a fixed subset of dataset indices, in a new seeded order every epoch.

    Args:
        indices: dataset indices to keep (unique, non-negative integers).
        shuffle: reshuffle the subset every epoch (else yield it as given).
        seed: the order of epoch ``e`` depends only on ``(seed, e)``.
    """

    def __init__(
        self, indices: Sequence[int] | np.ndarray, shuffle: bool = True, seed: int = 0
    ) -> None:
        self.indices = as_index_array(indices)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_indices(self) -> np.ndarray:
        """This epoch's indices in the order they are yielded."""
        if not self.shuffle:
            return self.indices
        rng = np.random.default_rng([self.seed, self.epoch])
        return self.indices[rng.permutation(len(self.indices))]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices().tolist())

    def __len__(self) -> int:
        return len(self.indices)
