"""Mask selects against the stable sorts they replace; the N:M kernel against its reference."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from datapruning.errors import DataPruningError
from datapruning.kernels import forced_backend
from datapruning.kernels.masks import (
    global_masks,
    nm_mask,
    nm_mask_reference,
    radix_kth_smallest,
    smallest_mask,
)


def sorted_global_masks(scores, caps, count):
    """Today's MagnitudePruner._global_masks (before the select): two stable sorts."""
    order, offers, owners = [], [], []
    for i, (s, cap) in enumerate(zip(scores, caps, strict=True)):
        values, index = torch.sort(s, stable=True)
        order.append(index)
        offers.append(values[:cap])
        owners.append(torch.full((cap,), i, dtype=torch.long))
    chosen = torch.sort(torch.cat(offers), stable=True).indices[:count]
    per_layer = torch.bincount(torch.cat(owners)[chosen], minlength=len(scores)).tolist()
    masks = []
    for i, s in enumerate(scores):
        keep = torch.ones(s.numel(), dtype=torch.bool)
        keep[order[i][: per_layer[i]]] = False
        masks.append(keep)
    return masks


def tied_scores(gen, size, levels, pruned_share):
    """Scores on a few levels (many ties), some already pruned (-1), as the pruner scores them."""
    s = torch.randint(0, levels, (size,), generator=gen).float() / levels
    return torch.where(torch.rand(size, generator=gen) < pruned_share, -1.0, s)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=5),
    levels=st.integers(1, 6),
    pruned_share=st.sampled_from([0.0, 0.3]),
    target=st.floats(0.0, 1.0),
    floor=st.floats(0.0, 0.9),
    seed=st.integers(0, 10_000),
)
def test_global_masks_equal_the_stable_sort(sizes, levels, pruned_share, target, floor, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = [tied_scores(gen, n, levels, pruned_share) for n in sizes]
    caps = [n - max(1, int(floor * n + 0.999)) for n in sizes]
    count = round(target * sum(caps))
    got = global_masks(scores, caps, count)
    want = sorted_global_masks(scores, caps, count)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    assert sum(int((~g).sum()) for g in got) == count


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 500),
    levels=st.integers(1, 8),
    share=st.floats(0, 1),
    seed=st.integers(0, 999),
)
def test_smallest_mask_equals_the_stable_sort(size, levels, share, seed):
    s = tied_scores(torch.Generator().manual_seed(seed), size, levels, 0.2)
    count = round(share * size)
    want = torch.ones(size, dtype=torch.bool)
    want[torch.sort(s, stable=True).indices[:count]] = False
    assert torch.equal(smallest_mask(s, count), want)


@pytest.mark.parametrize("size", [1, 7, 1000, 4099])
def test_radix_select_equals_kthvalue(size):
    gen = torch.Generator().manual_seed(size)
    values = torch.cat([torch.randn(size, generator=gen).abs(), torch.tensor([-1.0, 0.0, -0.0])])
    values = values[torch.randperm(values.numel(), generator=gen)]
    for k in {1, 2, values.numel() // 2, values.numel()}:
        assert radix_kth_smallest(values, k).item() == values.kthvalue(k).values.item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("shape", "n", "m"),
    [((1, 4), 2, 4), ((7, 12), 1, 4), ((5, 3, 3, 8), 2, 4), ((33, 48), 3, 8), ((3, 6), 2, 3)],
)
def test_nm_kernel_equals_reference_with_ties(shape, n, m, dtype):
    gen = torch.Generator().manual_seed(0)
    tied = (torch.randint(-3, 4, shape, generator=gen) / 2).to(dtype)  # many ties, signs
    with forced_backend("triton"):
        got = nm_mask(tied, n, m)
    want = nm_mask_reference(tied, n, m)
    assert torch.equal(got, want)
    groups = got.reshape(shape[0], -1, m)
    assert (groups.sum(dim=2) == n).all()
    # ties go to the lower index: an all-zero group keeps its first n
    zero = torch.zeros(shape, dtype=dtype)
    with forced_backend("triton"):
        first = nm_mask(zero, n, m).reshape(shape[0], -1, m)
    assert first[..., :n].all() and not first[..., n:].any()


def test_nm_equals_topk_without_ties():
    w = torch.randn(16, 64)
    groups = w.abs().reshape(16, -1, 4)
    want = torch.zeros_like(groups, dtype=torch.bool)
    want.scatter_(2, groups.topk(2, dim=2).indices, True)
    with forced_backend("triton"):
        assert torch.equal(nm_mask(w, 2, 4), want.view_as(w))
    with forced_backend("torch"):
        assert torch.equal(nm_mask(w, 2, 4), want.view_as(w))


@pytest.mark.parametrize(
    ("n", "m", "fragment"),
    [(4, 4, "need 0 < n < m"), (0, 4, "need 0 < n < m"), (2, 5, "does not divide")],
)
def test_nm_bad_pattern_is_one_line(n, m, fragment):
    with pytest.raises(DataPruningError, match=fragment) as info:
        nm_mask(torch.randn(3, 8), n, m)
    assert "\n" not in str(info.value) and "(3, 8)" in str(info.value)


def test_global_masks_through_the_radix_select(monkeypatch):
    # CUDA takes the radix select; run it here on tied scores.
    import datapruning.kernels.masks as masks

    monkeypatch.setattr(masks, "kth_smallest", radix_kth_smallest)
    gen = torch.Generator().manual_seed(1)
    scores = [tied_scores(gen, n, 3, 0.3) for n in (50, 7, 300)]
    caps = [40, 6, 200]
    for count in (0, 1, 100, 246):
        got = masks.global_masks(scores, caps, count)
        for g, w in zip(got, sorted_global_masks(scores, caps, count), strict=True):
            assert torch.equal(g, w)
