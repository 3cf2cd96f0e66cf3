import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from datapruning.data.loaders import TensorBatches, make_batches
from datapruning.data.samplers import SubsetSampler


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, 4, generator=gen)
    y = torch.randint(0, 5, (50,), generator=gen)
    return x, y


@pytest.fixture
def subset():
    return np.random.default_rng(1).choice(50, size=23, replace=False)


def test_tensor_batches_match_a_dataloader_over_the_same_sampler(data, subset):
    x, y = data
    sampler = SubsetSampler(subset, seed=4)
    memory = TensorBatches(x, y, sampler, batch_size=6)
    reference = DataLoader(TensorDataset(x, y, torch.arange(len(y))), sampler=sampler, batch_size=6)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        got, want = list(memory), list(reference)
        assert len(got) == len(want) == math.ceil(23 / 6)
        for (xb, yb, ib), (xr, yr, ir) in zip(got, want, strict=True):
            assert torch.equal(ib, ir)
            assert torch.equal(xb, xr)
            assert torch.equal(yb, yr)


def test_tensor_batches_cover_the_subset_with_aligned_rows(data, subset):
    x, y = data
    sampler = SubsetSampler(subset, seed=0)
    batches = list(TensorBatches(x, y, sampler, batch_size=10))
    assert [len(b[2]) for b in batches] == [10, 10, 3]
    index = torch.cat([b[2] for b in batches])
    assert sorted(index.tolist()) == sorted(subset.tolist())
    assert index.tolist() == list(sampler)
    for xb, yb, ib in batches:
        assert torch.equal(xb, x[ib])
        assert torch.equal(yb, y[ib])


@pytest.mark.parametrize(("size", "batch_size"), [(23, 6), (24, 6), (1, 6), (23, 100), (23, 1)])
def test_len(data, size, batch_size):
    x, y = data
    sampler = SubsetSampler(np.arange(size))
    memory = TensorBatches(x, y, sampler, batch_size)
    assert len(memory) == math.ceil(size / batch_size)
    assert len(list(memory)) == len(memory)
    torch_loader = make_batches("torch", x, y, sampler, batch_size)
    assert len(torch_loader) == len(memory)


def test_make_batches_kinds(data, subset):
    x, y = data
    sampler = SubsetSampler(subset, seed=2)
    memory = make_batches("memory", x, y, sampler, 8)
    torch_loader = make_batches("torch", x, y, sampler, 8)
    assert isinstance(memory, TensorBatches)
    assert isinstance(torch_loader, DataLoader)
    for (xb, yb, ib), (xr, yr, ir) in zip(memory, torch_loader, strict=True):
        assert torch.equal(ib, ir)
        assert torch.equal(xb, xr)
        assert torch.equal(yb, yr)
