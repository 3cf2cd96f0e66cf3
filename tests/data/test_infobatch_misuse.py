"""InfoBatchSampler's public methods refuse misuse in one line naming the argument (issue 25,
item 5); before, each was a raw torch error or passed silently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datapruning import InfoBatchSampler
from datapruning.errors import DataPruningError


def _sampler(n: int = 8, epochs: int = 4) -> InfoBatchSampler:
    sampler = InfoBatchSampler(n, epochs, prune=0.5, seed=0)
    sampler.set_epoch(0)
    return sampler


def test_update_with_the_mean_loss_names_losses():
    # Before: IndexError: index_copy_(): ...
    sampler = _sampler()
    index, losses = torch.arange(4), torch.rand(4)
    with pytest.raises(DataPruningError, match=r"losses.*reduction='none'"):
        sampler.update(index, losses.mean())


def test_update_with_mismatched_lengths_names_both():
    with pytest.raises(DataPruningError, match=r"losses has 3 .* index has 4"):
        _sampler().update(torch.arange(4), torch.rand(3))


def test_update_refuses_nan_and_inf_losses():
    # Before: NaN losses entered the table silently (and looked like "never updated").
    sampler = _sampler()
    for bad in (math.nan, math.inf):
        with pytest.raises(DataPruningError, match="losses contain NaN or inf"):
            sampler.update(torch.arange(2), torch.tensor([0.5, bad]))
    assert torch.isnan(sampler.losses).all()  # nothing recorded


def test_update_refuses_out_of_range_and_non_integer_index():
    sampler = _sampler()
    with pytest.raises(DataPruningError, match=r"index .* 0\.\.7"):
        sampler.update(torch.tensor([0, 8]), torch.rand(2))
    with pytest.raises(DataPruningError, match=r"index .* 0\.\.7"):
        sampler.update(torch.tensor([-1, 0]), torch.rand(2))
    with pytest.raises(DataPruningError, match="index must hold integers"):
        sampler.update(torch.tensor([0.0, 1.0]), torch.rand(2))
    with pytest.raises(DataPruningError, match="index must be 1-D"):
        sampler.update(torch.zeros(2, 2, dtype=torch.int64), torch.rand(2, 2))


def test_weights_takes_a_list_and_refuses_bad_indices():
    # Before: AttributeError: 'list' object has no attribute 'device'.
    sampler = _sampler()
    assert sampler.weights([0, 1, 2]).tolist() == [1.0, 1.0, 1.0]
    assert sampler.weights(np.array([3])).tolist() == [1.0]
    with pytest.raises(DataPruningError, match=r"index .* 0\.\.7"):
        sampler.weights([0, 9])
    with pytest.raises(DataPruningError, match="index must hold integers"):
        sampler.weights([0.5])


def test_set_epoch_beyond_the_epochs_is_refused():
    # Before: set_epoch(10) with epochs=4 passed silently (a full-data epoch past the plan).
    sampler = _sampler(epochs=4)
    sampler.set_epoch(3)
    with pytest.raises(DataPruningError, match=r"epoch 10 .* 0\.\.3 .*epochs=4"):
        sampler.set_epoch(10)
    with pytest.raises(DataPruningError, match="epoch must be at least 0"):
        sampler.set_epoch(-1)


def test_the_documented_loop_still_works():
    sampler = InfoBatchSampler(16, 4, prune=0.5, seed=0)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = list(sampler)
        index = torch.tensor(order)
        losses = torch.linspace(0, 1, len(order))
        weights = sampler.weights(index)
        assert weights.shape == losses.shape
        sampler.update(index, losses)
    assert sampler.sizes[0] == 16 and sampler.sizes[1] < 16


@pytest.mark.cuda
def test_nan_losses_on_cuda_are_refused_at_the_next_set_epoch():
    # No host sync per step on an accelerator: the check waits for set_epoch's.
    sampler = InfoBatchSampler(8, 4, prune=0.5, seed=0, device="cuda")
    sampler.set_epoch(0)
    index = torch.arange(4, device="cuda")
    sampler.update(index, torch.tensor([0.1, math.nan, 0.3, 0.4], device="cuda"))
    sampler.update(index, torch.rand(4, device="cuda"))  # a later finite batch hides nothing
    with pytest.raises(DataPruningError, match="NaN or inf losses during epoch 0"):
        sampler.set_epoch(1)
    with pytest.raises(DataPruningError, match="reduction='none'"):
        sampler.update(index, torch.rand(4, device="cuda").mean())
    assert sampler.weights(index).device.type == "cuda"
