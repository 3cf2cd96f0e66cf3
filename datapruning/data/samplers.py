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
import numbers
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from datapruning.errors import DataPruningError


def as_index_array(
    indices: Sequence[int] | np.ndarray, num_samples: int | None = None
) -> np.ndarray:
    """Validate ``indices`` (integers, no duplicates, in range) and return them as int64."""
    try:
        array = np.asarray(indices)
    except (TypeError, ValueError):  # ragged nesting
        raise DataPruningError("indices must be a 1-D list of integers") from None
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
    if not _is_number(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise DataPruningError(f"fraction {fraction!r} must lie in (0, 1]")
    return float(fraction)


def _is_number(value: Any, kind: type) -> bool:
    """A Python or NumPy number of ``kind`` (``numbers.Integral`` or ``Real``), not a bool."""
    return isinstance(value, kind) and not isinstance(value, bool | np.bool_)


def _integer(name: str, value: Any, minimum: int) -> int:
    # The samplers' sizes, seeds and epochs reach numpy as seeds and sizes: a float or a
    # string fails there (or is silently truncated by int()), a negative seed fails in numpy.
    if not _is_number(value, numbers.Integral):
        raise DataPruningError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise DataPruningError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _flag(name: str, value: Any) -> bool:
    # A truthy string such as "no" must not turn replacement or drop_last on.
    if not isinstance(value, bool | np.bool_):
        raise DataPruningError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """Number of ranks and this rank: the arguments, else the process group, else 1 and 0."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    num_replicas = _integer("num_replicas", num_replicas, 1)
    rank = _integer("rank", rank, 0)
    if not rank < num_replicas:
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
        self.seed = _integer("seed", seed, 0)
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.drop_last = _flag("drop_last", drop_last)
        self.epoch = 0

    @property
    @abstractmethod
    def epoch_size(self) -> int:
        """Indices per epoch over all ranks, before padding or dropping."""

    @abstractmethod
    def epoch_indices(self) -> np.ndarray:
        """This epoch's indices, all ranks together, in order."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = _integer("epoch", epoch, 0)

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
        # Positions rank, rank + R, ... of the epoch padded by cycling from its start, like
        # DistributedSampler, without building the padded epoch (R may dwarf the epoch).
        size = len(indices)
        start, stride = self.rank % size, self.num_replicas % size
        return indices[(start + stride * np.arange(self.num_per_rank)) % size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_indices().tolist())

    def __len__(self) -> int:
        return self.num_per_rank

    def state_dict(self) -> dict[str, Any]:
        # Epochs are pure functions of (seed, epoch): this is all a resume needs.
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, Mapping) or not {"seed", "epoch"} <= state.keys():
            raise DataPruningError(
                "sampler state must be a mapping with seed and epoch, as state_dict() returns"
            )
        if _integer("sampler state's seed", state["seed"], 0) != self.seed:
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
        if num_samples is not None:
            num_samples = _integer("num_samples", num_samples, 1)
        self.indices = as_index_array(indices, num_samples)
        self.shuffle = _flag("shuffle", shuffle)

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

    ``stratify`` (one class label per example) gives every class its share of
    the epoch's slots in proportion to its size, counted over the epochs rather
    than rounded in each one: class ``c`` with ``n_c`` of the ``N`` examples is
    owed ``q_c = epoch_size * n_c / N`` slots per epoch and gets ``floor(q_c)`` or
    ``ceil(q_c)`` of them in every epoch; the fractional slots go to the classes
    owed most so far (largest carried deficit; earliest deadline first among
    those owed a slot, ties to the lower label). After ``e`` epochs each class has
    been drawn within one example of ``e * q_c`` times, so a class too small for
    a slot in every epoch is drawn in some of them (95/5 examples at 10%: the
    small class every other epoch) instead of never. With more classes than
    slots every epoch draws one example from each of ``epoch_size`` classes,
    rotating so that each class is drawn at its rate ``q_c`` over the run. Each
    class walks its own permutations as above (a class's walk ends, topped up,
    in the epoch that exhausts it). Epoch ``e`` depends only on ``(seed, e)``, so
    ranks agree and a resumed run sees the same subsets.
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
        self.num_samples = _integer("num_samples", num_samples, 1)
        self.fraction = check_fraction(fraction)
        self.replacement = _flag("replacement", replacement)
        # ceil, so that ceil(N / subset_size) <= ceil(1 / fraction): full coverage in time.
        self.subset_size = max(1, math.ceil(self.fraction * self.num_samples - 1e-9))
        self._shares: _ClassShares | None = None
        if stratify is None:
            self._groups = [np.arange(self.num_samples)]
        else:
            try:
                labels = np.asarray(stratify)
            except (TypeError, ValueError):  # ragged nesting
                labels = np.empty(0, dtype=object)
            if labels.shape != (self.num_samples,):
                raise DataPruningError(
                    f"stratify needs one label per example ({self.num_samples}), "
                    f"got shape {labels.shape}"
                )
            # NaN labels match no class (an empty group); objects may not sort.
            if labels.dtype.kind not in "biuUSf" or (
                labels.dtype.kind == "f" and not np.isfinite(labels).all()
            ):
                raise DataPruningError(
                    f"stratify labels must be integers, strings or finite numbers, "
                    f"got dtype {labels.dtype}"
                )
            self._groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
            self._shares = _ClassShares([len(g) for g in self._groups], self.subset_size)

    @property
    def epoch_size(self) -> int:
        return self.subset_size

    @property
    def epochs_per_pass(self) -> int:
        """Epochs in which every example is seen (without replacement).

        Unstratified: the length of a walk, ``ceil(N / epoch_size)`` epochs from
        epoch 0. Stratified: the longest any class's walk can take (a class gets
        more than ``e * q_c - 2`` draws in ``e`` epochs), so any twice as many
        consecutive epochs hold one whole walk of every class.
        """
        if self._shares is None:
            return math.ceil(self.num_samples / self.subset_size)
        return self._shares.longest_walk

    def class_counts(self) -> np.ndarray:
        """How many examples of each class (sorted labels) this epoch draws."""
        if self._shares is None:
            return np.array([self.subset_size])
        return self._shares.at(self.epoch)[0]

    def epoch_indices(self) -> np.ndarray:
        if self._shares is None:
            return self._draw_unstratified(self._groups[0])
        sizes, walks, positions = self._shares.at(self.epoch)
        parts = [
            self._draw_class(self._groups[c], int(sizes[c]), c, int(walks[c]), int(positions[c]))
            for c in np.flatnonzero(sizes)
        ]
        indices = np.concatenate(parts)
        if len(parts) > 1:  # interleave the classes
            indices = indices[
                np.random.default_rng([self.seed, self.epoch]).permutation(len(indices))
            ]
        return indices

    def _draw_unstratified(self, group: np.ndarray) -> np.ndarray:
        size = self.subset_size
        if self.replacement:
            rng = np.random.default_rng([self.seed, 0, self.epoch])
            return group[rng.choice(len(group), size=size, replace=False)]
        chunks = math.ceil(len(group) / size)
        walk, chunk = divmod(self.epoch, chunks)
        return self._take(group, 0, walk, chunk * size, size)

    def _draw_class(
        self, group: np.ndarray, size: int, stream: int, walk: int, position: int
    ) -> np.ndarray:
        if self.replacement:
            rng = np.random.default_rng([self.seed, stream, self.epoch])
            return group[rng.choice(len(group), size=size, replace=False)]
        return self._take(group, stream, walk, position, size)

    def _take(self, group: np.ndarray, stream: int, walk: int, start: int, size: int) -> np.ndarray:
        """``size`` examples from ``start`` in permutation ``walk`` of ``group``, topped up if short."""
        rng = np.random.default_rng([self.seed, stream, walk])
        order = group[rng.permutation(len(group))]
        taken = order[start : start + size]
        short = size - len(taken)
        if short:
            earlier = order[:start]
            taken = np.concatenate([taken, earlier[rng.choice(len(earlier), short, replace=False)]])
        return taken


class _ClassShares:
    """Per-epoch class counts of stratified RS2, with fractional slots carried across epochs.

    Class ``c`` is owed ``q_c = S * n_c / N`` of the ``S`` slots per epoch. It gets
    ``floor(q_c)`` every epoch; the ``R = sum(frac(q_c))`` remaining slots (an
    integer) go, one each, to the classes with a positive deficit
    ``(e + 1) * q_c - drawn_c``, earliest deadline first (the epoch by which the
    class's next slot is due, so that its count never falls a whole slot behind),
    ties to the larger deficit, then the lower label. Only classes still owed a
    slot are eligible, so no class runs a whole slot ahead either. This is the
    chairman-assignment problem; on 6000 random cases (up to 60 classes, 300
    epochs) the cumulative count stayed strictly within one slot of ``e * q_c``.
    Arithmetic is in integers (numerators over ``N``), so every rank agrees.

    Epochs are computed in order from epoch 0 (each needs the counts before it);
    the state after the last epoch asked for is kept, so a run that asks for
    epochs in order does ``O(classes)`` work per epoch.
    """

    def __init__(self, counts: list[int], slots: int) -> None:
        self.counts = np.asarray(counts, dtype=np.int64)
        self.total = int(self.counts.sum())
        self.floor = slots * self.counts // self.total
        # Fractional parts of q_c as numerators over N; they sum to R * N.
        self.remainder = slots * self.counts % self.total
        self.extra = int(self.remainder.sum() // self.total)
        self._labels = np.arange(len(self.counts))
        self._reset()
        # q_c = slots * n_c / N, so (n_c + 1) / q_c epochs give n_c draws.
        self.longest_walk = int(
            max(-(-(n + 1) * self.total // (slots * n)) for n in self.counts.tolist())
        )

    def _reset(self) -> None:
        self._epoch = 0  # the epoch the state below precedes
        self._extras = np.zeros_like(self.counts)  # fractional slots given so far
        self._walks = np.zeros_like(self.counts)
        self._positions = np.zeros_like(self.counts)

    def _sizes(self) -> np.ndarray:
        owed = (self._epoch + 1) * self.remainder - self._extras * self.total
        eligible = (self.remainder > 0) & (owed > 0)
        # The epoch by which the next fractional slot is due: (e' + 1) * rem >= (extras + 1) * N.
        due = -(-(self._extras + 1) * self.total // np.maximum(self.remainder, 1)) - 1
        never = np.iinfo(np.int64).max
        order = np.lexsort((self._labels, -owed, np.where(eligible, due, never)))
        given = np.zeros_like(self.counts)
        given[order[: self.extra]] = 1
        return self.floor + given

    def _advance(self, sizes: np.ndarray) -> None:
        self._extras += sizes - self.floor
        end = self._positions + sizes
        done = end >= self.counts  # the walk is used up (a short last chunk is topped up)
        self._walks = np.where(done, self._walks + 1, self._walks)
        self._positions = np.where(done, 0, end)
        self._epoch += 1

    def at(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Epoch ``epoch``'s per-class sizes, walk numbers and start positions in the walk."""
        if epoch < self._epoch:
            self._reset()
        while self._epoch < epoch:
            self._advance(self._sizes())
        return self._sizes(), self._walks.copy(), self._positions.copy()
