import math
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from datapruning.data.samplers import SubsetSampler, as_index_array
from datapruning.errors import DataPruningError


class IndexDataset(Dataset):
    """Item i is i itself, so a loader's batches show which indices it drew."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def epoch_order(loader):
    return torch.cat(list(loader)).tolist()


@pytest.fixture
def indices():
    return np.random.default_rng(0).choice(100, size=37, replace=False)


def test_is_a_torch_sampler(indices):
    assert isinstance(SubsetSampler(indices), Sampler)


def test_dataloader_yields_exactly_the_selected_indices_each_epoch(indices):
    sampler = SubsetSampler(indices, seed=3)
    loader = DataLoader(IndexDataset(100), sampler=sampler, batch_size=8)
    assert len(loader) == math.ceil(len(indices) / 8)
    orders = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = epoch_order(loader)
        assert len(order) == len(indices)
        assert sorted(order) == sorted(indices.tolist())
        orders.append(order)
    # A new order every epoch.
    assert len({tuple(o) for o in orders}) == 4
    # Shuffled, not the given order.
    assert orders[0] != indices.tolist()


def test_order_depends_only_on_seed_and_epoch(indices):
    first = SubsetSampler(indices, seed=7)
    second = SubsetSampler(indices, seed=7)
    for sampler in (first, second):
        sampler.set_epoch(2)
    assert list(first) == list(second)
    # Iterating again in the same epoch repeats it.
    assert list(first) == list(first)
    # Going back to an epoch reproduces it.
    first.set_epoch(0)
    epoch0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch0
    first.set_epoch(0)
    assert list(first) == epoch0
    # Another seed gives another order.
    other = SubsetSampler(indices, seed=8)
    other.set_epoch(0)
    assert list(other) != epoch0
    assert sorted(other) == sorted(epoch0)


def test_same_order_through_dataloader_for_same_seed_and_epoch(indices):
    orders = []
    for _ in range(2):
        sampler = SubsetSampler(indices, seed=11)
        sampler.set_epoch(5)
        orders.append(epoch_order(DataLoader(IndexDataset(100), sampler=sampler, batch_size=5)))
    assert orders[0] == orders[1]


def test_shuffle_false_keeps_the_given_order():
    given = [5, 2, 9, 0, 41]
    sampler = SubsetSampler(given, shuffle=False, seed=3)
    loader = DataLoader(IndexDataset(50), sampler=sampler, batch_size=2)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert epoch_order(loader) == given


def test_len_is_the_subset_size(indices):
    assert len(SubsetSampler(indices)) == 37
    assert len(SubsetSampler([3])) == 1


def test_yields_python_ints():
    assert all(type(i) is int for i in SubsetSampler(np.array([4, 1, 2], dtype=np.int32)))


def test_as_index_array_converts_to_int64():
    out = as_index_array(np.array([3, 1, 2], dtype=np.int32), num_samples=4)
    assert out.dtype == np.int64
    assert out.tolist() == [3, 1, 2]
    assert as_index_array([0, 9], num_samples=10).tolist() == [0, 9]


@pytest.mark.parametrize(
    ("bad", "num_samples", "match"),
    [
        ([0, 10], 10, "0..9"),
        ([-1, 2], 10, "lie in"),
        ([-1, 2], None, "non-negative"),
        ([1, 2, 1], 10, "duplicates"),
        ([], 10, "empty"),
        (np.array([], dtype=np.int64), None, "empty"),
        ([0.0, 1.0], 10, "integers"),
        ([0.5, 1.0], None, "integers"),
        (["a", "b"], None, "integers"),
        ([True, False], None, "integers"),
        ([[0, 1], [2, 3]], 10, "1-D"),
        (np.int64(3), 10, "1-D"),
    ],
)
def test_bad_indices_raise(bad, num_samples, match):
    with pytest.raises(DataPruningError, match=re.escape(match)):
        as_index_array(bad, num_samples=num_samples)


@pytest.mark.parametrize("bad", [[1, 1], [], [0.0, 2.0], [[0, 1]], [-3, 0]])
def test_sampler_refuses_bad_indices(bad):
    with pytest.raises(DataPruningError):
        SubsetSampler(bad)
