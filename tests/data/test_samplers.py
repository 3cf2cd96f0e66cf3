import math
import re
from itertools import chain

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from datapruning.data.samplers import RS2Sampler, SubsetSampler, as_index_array
from datapruning.errors import DataPruningError, FingerprintMismatchError
from datapruning.scores import Scores


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


# --- RS2 ---------------------------------------------------------------------


def test_rs2_draws_a_fresh_subset_each_epoch_through_a_dataloader():
    sampler = RS2Sampler(1000, 0.1, seed=4)
    loader = DataLoader(IndexDataset(1000), sampler=sampler, batch_size=32)
    assert len(sampler) == 100
    assert len(loader) == math.ceil(100 / 32)
    epochs = []
    for epoch in range(10):
        sampler.set_epoch(epoch)
        order = epoch_order(loader)
        assert len(order) == len(set(order)) == 100
        epochs.append(set(order))
    # Without replacement, ten epochs of 10% are one pass: disjoint and covering.
    assert set().union(*epochs) == set(range(1000))
    assert sum(len(e) for e in epochs) == 1000


def test_rs2_reshuffles_after_each_pass():
    sampler = RS2Sampler(100, 0.25, seed=1)
    first_pass, second_pass = [], []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        first_pass.append(sampler.epoch_indices().tolist())
        sampler.set_epoch(epoch + 4)
        second_pass.append(sampler.epoch_indices().tolist())
    assert first_pass != second_pass
    assert sorted(list(chain.from_iterable(second_pass))) == list(range(100))


def test_rs2_with_replacement_draws_each_epoch_independently():
    sampler = RS2Sampler(100, 0.5, replacement=True, seed=0)
    draws = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        draws.append(set(sampler.epoch_indices().tolist()))
    assert all(len(d) == 50 for d in draws)
    # Independent draws of half the data overlap; a walk without replacement would not.
    assert len(draws[0] & draws[1]) > 0


def test_rs2_full_fraction_is_a_permutation_every_epoch():
    sampler = RS2Sampler(30, 1.0, seed=2)
    sampler.set_epoch(3)
    assert sorted(sampler) == list(range(30))


def test_rs2_state_dict_restores_the_epoch():
    sampler = RS2Sampler(200, 0.2, seed=9)
    sampler.set_epoch(7)
    restored = RS2Sampler(200, 0.2, seed=9)
    restored.load_state_dict(sampler.state_dict())
    assert list(restored) == list(sampler)
    with pytest.raises(DataPruningError, match="same seed"):
        RS2Sampler(200, 0.2, seed=1).load_state_dict(sampler.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 10, "fraction": 0.0}, "fraction 0.0 must lie in (0, 1]"),
        ({"num_samples": 10, "fraction": 1.5}, "fraction 1.5 must lie in (0, 1]"),
        ({"num_samples": 10, "fraction": -0.1}, "(0, 1]"),
        ({"num_samples": 0, "fraction": 0.5}, "num_samples must be at least 1"),
        ({"num_samples": 10, "fraction": 0.5, "stratify": [0, 1]}, "one label per example"),
        ({"num_samples": 10, "fraction": 0.5, "num_replicas": 2, "rank": 2}, "rank 2"),
        ({"num_samples": 10, "fraction": 0.5, "num_replicas": 0, "rank": 0}, "num_replicas"),
    ],
)
def test_rs2_bad_input_raises(kwargs, match):
    with pytest.raises(DataPruningError, match=re.escape(match)):
        RS2Sampler(**kwargs)


def test_drop_last_with_fewer_indices_than_ranks_is_refused():
    with pytest.raises(DataPruningError, match="ranks"):
        len(SubsetSampler([1, 2], num_replicas=4, rank=0, drop_last=True))


def test_subset_sampler_checks_indices_against_the_dataset_size():
    with pytest.raises(DataPruningError, match=re.escape("0..9")):
        SubsetSampler([3, 10], num_samples=10)


# --- DDP without a process group: explicit num_replicas / rank ----------------


def test_ranks_get_disjoint_equal_shares_padded_like_distributed_sampler():
    indices = np.arange(10) * 3
    shares = [list(SubsetSampler(indices, seed=5, num_replicas=4, rank=rank)) for rank in range(4)]
    assert [len(s) for s in shares] == [3, 3, 3, 3]
    gathered = list(chain.from_iterable(shares))
    assert set(gathered) == set(indices.tolist())
    assert len(gathered) == 12  # two indices repeated as padding, as DistributedSampler does
    dropped = [
        list(SubsetSampler(indices, seed=5, num_replicas=4, rank=rank, drop_last=True))
        for rank in range(4)
    ]
    assert [len(s) for s in dropped] == [2, 2, 2, 2]
    assert len(set(list(chain.from_iterable(dropped)))) == 8


# --- from_scores ----------------------------------------------------------------


def test_from_scores_selects_the_subset_of_a_scores_file(tmp_path):
    table = pd.DataFrame({"index": np.arange(50), "score": np.arange(50.0), "label": 0})
    path = Scores(table, {"dataset": {"fingerprint": "v2:abc"}}).save(tmp_path / "s.parquet")
    sampler = SubsetSampler.from_scores(path, keep=0.2, strategy="hard", fingerprint="v2:abc")
    assert sorted(sampler) == list(range(40, 50))
    easy = SubsetSampler.from_scores(path, keep=0.1, strategy="easy", num_replicas=5, rank=0)
    assert len(easy) == 1
    with pytest.raises(FingerprintMismatchError, match="score this dataset first"):
        SubsetSampler.from_scores(path, keep=0.2, fingerprint="other")
    with pytest.raises(DataPruningError, match="not found"):
        SubsetSampler.from_scores(tmp_path / "missing.parquet", keep=0.2)


# --- RS2 stratified -----------------------------------------------------------


def test_rs2_stratified_draws_a_class_smaller_than_one_slot_in_some_epochs():
    # The case: 95/5 examples, 10% a epoch. The small class is owed half a slot
    # per epoch; rounding within each epoch would never draw it.
    labels = np.array([0] * 95 + [1] * 5)
    sampler = RS2Sampler(100, 0.1, stratify=labels, seed=0)
    small = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        drawn = sampler.epoch_indices()
        assert len(drawn) == len(set(drawn.tolist())) == 10
        small.append(int((labels[drawn] == 1).sum()))
    assert small == [1, 0] * 10 or small == [0, 1] * 10
    # Ten epochs of 10% draw each class's 10% share of the pass: 95 and 5 examples.
    assert sum(small[:10]) == 5


def test_rs2_stratified_with_more_classes_than_slots_rotates_the_classes():
    labels = np.repeat(np.arange(20), 5)  # 20 classes of 5, 5 slots an epoch
    sampler = RS2Sampler(100, 0.05, stratify=labels, seed=3)
    classes_drawn = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        drawn = labels[sampler.epoch_indices()]
        assert len(set(drawn.tolist())) == 5  # one example from each of 5 classes
        classes_drawn.extend(drawn.tolist())
    assert sorted(classes_drawn) == list(range(20))  # every class once in 4 epochs


def test_rs2_stratified_resumes_at_any_epoch_in_any_order():
    labels = np.random.default_rng(1).choice(7, size=300, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.04, 0.01])
    in_order = RS2Sampler(300, 0.03, stratify=labels, seed=5, num_replicas=2, rank=1)
    epochs = []
    for epoch in range(30):
        in_order.set_epoch(epoch)
        epochs.append(list(in_order))
    resumed = RS2Sampler(300, 0.03, stratify=labels, seed=5, num_replicas=2, rank=1)
    for epoch in (17, 3, 29, 0, 17):
        resumed.load_state_dict({"seed": 5, "epoch": epoch})
        assert list(resumed) == epochs[epoch]
