"""Fuzzing the samplers: any constructor argument, epoch and resume state.

Each test accepts two outcomes: a sampler whose indices are in range, whose
``len()`` is what it yields, that gives the same indices for the same seed and
epoch (also after ``load_state_dict``), and whose ranks share the epoch out as
``DistributedSampler`` does; or a ``DataPruningError`` with a one-line message
(the project's convention for bad input, also where a torch sampler would
raise ``TypeError`` or ``ValueError``). The inputs that found a bug are kept as
``@example``s. ``HYPOTHESIS_PROFILE=ci`` runs ten times as many examples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fuzz_helper import JUNK, assert_one_line, budget
from hypothesis import example, given
from hypothesis import strategies as st

from datapruning import RS2Sampler, SubsetSampler
from datapruning.errors import DataPruningError

SIZES = st.integers(1, 300) | st.sampled_from([1, 2, 7]) | st.just(np.int64(40)) | JUNK
FRACTIONS = st.floats(0, 1.2) | st.sampled_from([1e-9, 1.0, np.float64(0.25)]) | JUNK
SEEDS = st.integers(0, 2**64) | st.integers(0, 3) | JUNK
# Stratified RS2 computes epochs in order from 0, so its epochs stay small here.
EPOCHS = st.integers(0, 200) | JUNK
FAR_EPOCHS = EPOCHS | st.integers(0, 2**70)
FLAGS = st.booleans() | st.just(np.bool_(False)) | JUNK


def world() -> st.SearchStrategy[tuple[Any, Any]]:
    """(num_replicas, rank): usually valid, sometimes far too many ranks, sometimes junk."""
    valid = st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1)))
    many = st.integers(1, 2**62).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1)))
    return st.one_of(valid, valid, many, st.tuples(SIZES | st.none(), SIZES | st.none()))


def labels_for(num_samples: Any) -> st.SearchStrategy[Any]:
    fitting = st.nothing()
    if isinstance(num_samples, int | np.integer) and not isinstance(num_samples, bool):
        n = int(num_samples)
        if 0 < n <= 300:
            fitting = st.one_of(
                st.lists(st.integers(-3, 5), min_size=n, max_size=n).map(np.array),
                st.lists(st.sampled_from(["cat", "dog", "x"]), min_size=n, max_size=n),
                st.lists(st.floats(), min_size=n, max_size=n),  # NaN labels
                st.just(np.zeros(n, dtype=bool)),
                st.just([[0]] * n),  # 2-D
                st.just(np.zeros(n, dtype=object)),
            )
    return st.one_of(
        st.none(),
        fitting,
        st.lists(st.integers(0, 3), max_size=5),  # the wrong length
        st.just([[0], [1, 2]]),  # ragged
        JUNK,
    )


def check_sampler(make: Any, epoch: Any, num_replicas: Any, allowed: set[int] | None) -> None:
    """Build a sampler (one per rank when that is few), set the epoch, draw, check invariants."""
    try:
        sampler = make(None)
        sampler.set_epoch(epoch)
        drawn = list(sampler)
    except DataPruningError as exc:
        assert_one_line(exc)
        return
    assert len(drawn) == len(sampler) > 0
    assert all(isinstance(i, int) for i in drawn)
    upper = getattr(sampler, "num_samples", None)
    if allowed is not None:
        assert set(drawn) <= allowed
    else:
        assert all(0 <= i < upper for i in drawn)
    # The same arguments, seed and epoch give the same indices, also after a resume.
    again = make(None)
    again.set_epoch(epoch)
    assert list(again) == drawn
    resumed = make(None)
    resumed.load_state_dict(sampler.state_dict())
    assert list(resumed) == drawn
    # Ranks: disjoint shares of equal length that cover the epoch (drop_last: a prefix of it).
    if isinstance(num_replicas, int) and 1 < num_replicas <= 8:
        shares = [make(rank) for rank in range(num_replicas)]
        for share in shares:
            share.set_epoch(epoch)
        lists = [list(share) for share in shares]
        assert {len(x) for x in lists} == {len(sampler)}
        epoch_indices = set(sampler.epoch_indices().tolist())
        gathered = [i for share in lists for i in share]
        if sampler.drop_last:
            assert len(set(gathered)) == len(gathered)
            assert set(gathered) <= epoch_indices
        else:
            assert set(gathered) == epoch_indices


@budget(200)
@given(
    data=st.data(),
    num_samples=SIZES,
    fraction=FRACTIONS,
    replacement=FLAGS,
    seed=SEEDS,
    ranks=world(),
    drop_last=FLAGS,
)
@example(  # TypeError: int(None)
    data=None, num_samples=10, fraction=0.5, replacement=False, seed=None,
    ranks=(1, 0), drop_last=False,
)  # fmt: skip
@example(  # ValueError from numpy at the first epoch: expected non-negative integer
    data=None, num_samples=10, fraction=0.5, replacement=False, seed=-1,
    ranks=(1, 0), drop_last=False,
)  # fmt: skip
@example(  # TypeError: '<' not supported between 'str' and 'int'
    data=None, num_samples="3", fraction=0.5, replacement=False, seed=0,
    ranks=(1, 0), drop_last=False,
)  # fmt: skip
@example(  # TypeError from the fraction check
    data=None, num_samples=10, fraction="0.5", replacement=False, seed=0,
    ranks=(1, 0), drop_last=False,
)  # fmt: skip
@example(  # TypeError from the rank check
    data=None, num_samples=10, fraction=0.5, replacement=False, seed=0,
    ranks=(None, "0"), drop_last=False,
)  # fmt: skip
@example(  # MemoryError: padding the epoch to 2**61 ranks
    data=None, num_samples=10, fraction=0.5, replacement=False, seed=0,
    ranks=(2**61, 2**61 - 1), drop_last=False,
)  # fmt: skip
@example(  # a truthy string took for replacement=True
    data=None, num_samples=10, fraction=0.5, replacement="no", seed=0,
    ranks=(1, 0), drop_last=False,
)  # fmt: skip
def test_rs2_sampler_any_arguments(
    data: Any,
    num_samples: Any,
    fraction: Any,
    replacement: Any,
    seed: Any,
    ranks: tuple[Any, Any],
    drop_last: Any,
) -> None:
    if data is None:  # an @example: unstratified, epoch 3
        stratify, epoch = None, 3
    else:
        stratify = data.draw(labels_for(num_samples), label="stratify")
        epoch = data.draw(EPOCHS if stratify is not None else FAR_EPOCHS, label="epoch")
    num_replicas, rank = ranks

    def make(this_rank: Any) -> RS2Sampler:
        return RS2Sampler(
            num_samples,
            fraction,
            replacement,
            stratify,
            seed,
            num_replicas=num_replicas,
            rank=rank if this_rank is None else this_rank,
            drop_last=drop_last,
        )

    check_sampler(make, epoch, num_replicas, None)


@pytest.mark.parametrize(
    "stratify",
    [
        [0, 1, float("nan"), 1],  # ZeroDivisionError: NaN labels made an empty class
        [[0], [1, 2], [3], [4]],  # ValueError from np.asarray: ragged
        np.array([None, 1, "a", 2.5], dtype=object),  # TypeError from np.unique
    ],
)
def test_rs2_refuses_labels_it_cannot_group(stratify: Any) -> None:
    with pytest.raises(DataPruningError, match="stratify"):
        RS2Sampler(4, 0.5, stratify=stratify)


INDICES = st.one_of(
    st.lists(st.integers(0, 400), min_size=1, max_size=60, unique=True),
    st.lists(st.integers(-5, 2**70), max_size=6),  # negative, huge, duplicate, empty
    st.lists(st.floats(), max_size=4),
    st.just([[0], [1, 2]]),
    st.just(np.array([2**63 + 1], dtype=np.uint64)),
    JUNK,
)


@budget(150)
@given(
    indices=INDICES,
    shuffle=FLAGS,
    seed=SEEDS,
    num_samples=st.none() | SIZES | st.integers(400, 500),
    ranks=world(),
    drop_last=FLAGS,
    epoch=FAR_EPOCHS,
)
@example(  # ValueError from np.asarray: ragged
    indices=[[0], [1, 2]], shuffle=True, seed=0, num_samples=None, ranks=(1, 0),
    drop_last=False, epoch=0,
)  # fmt: skip
@example(  # ValueError from numpy at the first epoch: expected non-negative integer
    indices=[0, 1], shuffle=True, seed=-1, num_samples=None, ranks=(1, 0), drop_last=False,
    epoch=0,
)  # fmt: skip
@example(  # ValueError from numpy: expected non-negative integer
    indices=[0, 1], shuffle=True, seed=0, num_samples=None, ranks=(1, 0), drop_last=False,
    epoch=-1,
)  # fmt: skip
@example(  # a message that read "must lie in 0..-1"
    indices=[0, 1], shuffle=True, seed=0, num_samples=0, ranks=(1, 0), drop_last=False,
    epoch=0,
)  # fmt: skip
def test_subset_sampler_any_arguments(
    indices: Any,
    shuffle: Any,
    seed: Any,
    num_samples: Any,
    ranks: tuple[Any, Any],
    drop_last: Any,
    epoch: Any,
) -> None:
    num_replicas, rank = ranks

    def make(this_rank: Any) -> SubsetSampler:
        return SubsetSampler(
            indices,
            shuffle,
            seed,
            num_samples=num_samples,
            num_replicas=num_replicas,
            rank=rank if this_rank is None else this_rank,
            drop_last=drop_last,
        )

    try:
        allowed = set(np.asarray(indices).tolist())
    except (TypeError, ValueError):
        allowed = set()
    check_sampler(make, epoch, num_replicas, allowed)


@budget(60)
@given(
    state=st.one_of(
        JUNK,
        st.dictionaries(st.text(max_size=6), JUNK, max_size=3),
        st.fixed_dictionaries({"seed": SEEDS, "epoch": FAR_EPOCHS}),
    )
)
@example(state={})  # KeyError
@example(state=[])  # TypeError
@example(state={"seed": 7, "epoch": "x"})  # ValueError from int()
@example(state={"seed": 7, "epoch": -2})  # ValueError from numpy at the next draw
def test_sampler_load_state_dict_any_state(state: Any) -> None:
    sampler = RS2Sampler(50, 0.2, seed=7)
    try:
        sampler.load_state_dict(state)
        drawn = list(sampler)
    except DataPruningError as exc:
        assert_one_line(exc)
        return
    assert state["seed"] == 7 and sampler.epoch == state["epoch"]
    assert len(drawn) == 10 and all(0 <= i < 50 for i in drawn)
