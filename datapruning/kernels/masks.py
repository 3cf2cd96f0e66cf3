"""Pruning masks without sorting: selects for magnitude masks, compare-and-count for N:M.

Global magnitude pruning used to stable-sort every layer's scores and then the
pooled offers (``torch.sort`` twice over ~11 M scores at ResNet-18 scale). A
mask only needs the k-th smallest score and a rule for ties, so here a
selection finds the threshold (``torch.kthvalue`` on the reference path, a
two-pass 16-bit radix select built from ``index_add_`` histograms where the
dispatcher takes the fast path, CUDA by default, since there ``kthvalue`` runs
one thread block per slice) and ties at the threshold are taken in position
order by a cumulative count. The select itself queues without a host sync;
:func:`global_masks` then reads one small vector back per round (which layers
went over their cap: one ``.tolist()``, at each mask update, not each step). The masks are exactly those of the stable sort: a score
``s`` at position ``j`` ranks by ``(s, j)``; across layers, by ``(s, layer, j)``. On ResNet-18's 19 pruned
layers (11.2 M scores, half already pruned) the select takes 282 ms of CPU time
against 2270 ms for the two sorts, with identical masks
(bench/results/kernel_optim_cpu.json, one thread; GPU figures not yet measured).

N:M masks run every step in dynamic N:M training, so they avoid ``topk`` (whose
order among ties is unspecified): an element of a group of ``m`` is kept when
fewer than ``n`` elements beat it, where ``a`` beats ``b`` if ``|a| > |b|``, or
``|a| == |b|`` and ``a`` comes first (lower index wins ties). The Triton kernel
counts beats over each group's ``m`` loads; the torch reference takes a stable
descending sort, which orders the same way. Without ties both equal ``topk``
(on ResNet-18's weights at 2:4, one group of 2.8 M differs from topk, a tie).
The reference's stable sort costs 279 ms of CPU time against topk's 222 ms
there: the price of a defined tie order off the GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor

from datapruning.errors import DataPruningError
from datapruning.kernels._dispatch import (
    HAVE_TRITON,
    PROBED,
    launch_failed,
    record,
    take_kernel,
)

if HAVE_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _nm_kernel(
        w_ptr,
        out_ptr,
        n_groups,
        N: tl.constexpr,
        M: tl.constexpr,
        M_POW2: tl.constexpr,
        GROUPS: tl.constexpr,
    ):
        # One program: GROUPS consecutive groups of M weights, as a (GROUPS, M_POW2) tile.
        pid = tl.program_id(0)
        group = pid.to(tl.int64) * GROUPS + tl.arange(0, GROUPS)
        lane = tl.arange(0, M_POW2)
        live = (group[:, None] < n_groups) & (lane[None, :] < M)
        offs = group[:, None] * M + lane[None, :]
        mine = tl.abs(tl.load(w_ptr + offs, mask=live, other=0.0).to(tl.float32))
        beaten = tl.zeros((GROUPS, M_POW2), dtype=tl.int32)
        for k in tl.static_range(M):
            other = tl.abs(
                tl.load(w_ptr + group * M + k, mask=group < n_groups, other=0.0).to(tl.float32)
            )[:, None]
            beats = (other > mine) | ((other == mine) & (k < lane[None, :]))
            beaten += beats.to(tl.int32)
        tl.store(out_ptr + offs, (beaten < N).to(tl.int8), mask=live)


def check_nm(n: int, m: int, width: int, name: str = "weight") -> None:
    """Raise unless ``n:m`` is a valid pattern for rows of ``width`` input weights."""
    if not 0 < n < m:
        raise DataPruningError(f"N:M sparsity {n}:{m} on {name}: need 0 < n < m")
    if width % m:
        raise DataPruningError(
            f"N:M sparsity {n}:{m}: m = {m} does not divide the input width {width} of {name}; "
            "pick another m or leave the layer out"
        )


def nm_mask(weight: Tensor, n: int, m: int) -> Tensor:
    """Keep the ``n`` largest |w| of every ``m`` consecutive input weights (ties: lower index).

    ``weight`` is viewed as (out, in * kernel...); the mask has its shape.

    Raises:
        DataPruningError: not ``0 < n < m``, or ``m`` does not divide the input width.
    """
    weight = weight.detach()
    check_nm(n, m, weight[0].numel() if weight.dim() else 1, f"a tensor {tuple(weight.shape)}")
    variant = (str(weight.device), weight.dtype, n, m)
    if take_kernel("nm_mask", lambda: variant, (weight,), _probe_nm):
        try:
            mask = _nm_launch(weight, n, m)
        except Exception as exc:  # never break a run: the reference gives the same mask
            launch_failed("nm_mask", variant, exc)
        else:
            record("nm_mask", "triton", PROBED)
            return mask
    return nm_mask_reference(weight, n, m)


def nm_groups_per_program(m: int) -> int:
    """Groups of ``m`` one program of the N:M kernel masks (a tile of about 1024 lanes)."""
    return max(1, 1024 // triton.next_power_of_2(m))


def _nm_launch(weight: Tensor, n: int, m: int) -> Tensor:
    flat = weight.contiguous().view(-1)
    out = torch.empty(flat.shape, dtype=torch.int8, device=flat.device)
    n_groups = flat.numel() // m
    groups_per_program = nm_groups_per_program(m)
    grid = (triton.cdiv(n_groups, groups_per_program),)
    guard = torch.cuda.device(flat.device) if flat.is_cuda else contextlib.nullcontext()
    with guard:
        _nm_kernel[grid](
            flat,
            out,
            n_groups,
            N=n,
            M=m,
            M_POW2=triton.next_power_of_2(m),
            GROUPS=groups_per_program,
        )
    return out.view(torch.bool).view(weight.shape)


def _probe_nm(variant: tuple[str, torch.dtype, int, int]) -> str | None:
    """The N:M kernel on a small weight with ties, over two programs, against the reference."""
    device, dtype, n, m = variant
    groups = nm_groups_per_program(m) + 3
    gen = torch.Generator().manual_seed(0)
    # Few distinct magnitudes, both signs: ties inside groups are common.
    weight = (torch.randint(-3, 4, (groups, m), generator=gen) / 2).to(device, dtype)
    got, want = _nm_launch(weight, n, m), nm_mask_reference(weight, n, m)
    if torch.equal(got.cpu(), want.cpu()):
        return None
    return f"{int((got != want).sum())} of {want.numel()} mask entries differ"


def nm_mask_reference(weight: Tensor, n: int, m: int) -> Tensor:
    """Torch reference of :func:`nm_mask`: a stable descending sort orders ties by index."""
    groups = weight.detach().abs().reshape(weight.shape[0], -1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    order = torch.sort(groups, dim=2, descending=True, stable=True).indices
    keep.scatter_(2, order[..., :n], True)
    return keep.view_as(weight)


def _float_keys(values: Tensor) -> Tensor:
    """int64 keys in [0, 2**32) ordered as the float32 ``values`` (-0 taken as +0)."""
    bits = (values.float() + 0.0).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    return torch.where(bits >= 0x80000000, 0xFFFFFFFF - bits, bits | 0x80000000)


def _from_key(key: Tensor) -> Tensor:
    bits = torch.where(key >= 0x80000000, key ^ 0x80000000, 0xFFFFFFFF - key)
    bits = torch.where(bits >= 0x80000000, bits - 0x100000000, bits)
    return bits.to(torch.int32).view(torch.float32)


def radix_kth_smallest(values: Tensor, k: int) -> Tensor:
    """The k-th smallest (1-based) of 1-D float32 ``values``: two 16-bit histogram passes.

    Every step is a device op with a size known on the host (histograms by
    ``index_add_`` into 65 536 bins, not ``bincount``, whose output size is the
    input's maximum and so reads it back), so it queues without waiting for the
    device; unlike ``kthvalue``, which gives one slice one thread block, each
    pass spreads over the whole GPU. The result is a 0-d float32 tensor.
    """
    keys = _float_keys(values)
    high, low = keys >> 16, keys & 0xFFFF
    counts = _histogram(high, 1 << 16).cumsum(0)
    digit = torch.searchsorted(counts, k)  # first bin holding the k-th (a 0-d tensor)
    below = counts.index_select(0, (digit - 1).clamp(min=0).reshape(1)).squeeze(0)
    below = torch.where(digit > 0, below, 0)
    low_in_bin = torch.where(high == digit, low, 1 << 16)  # others go to a spare bin
    counts_low = _histogram(low_in_bin, (1 << 16) + 1)[: 1 << 16].cumsum(0)
    digit_low = torch.searchsorted(counts_low, (k - below).reshape(1)).squeeze(0)
    return _from_key(digit * 65536 + digit_low).reshape(())


def _histogram(keys: Tensor, bins: int) -> Tensor:
    """Counts of each key in ``[0, bins)``, with a size fixed on the host (no read-back)."""
    counts = torch.zeros(bins, dtype=torch.int64, device=keys.device)
    return counts.index_add_(0, keys, torch.ones_like(keys))


def kth_smallest(values: Tensor, k: int) -> Tensor:
    """The k-th smallest (1-based) of 1-D float32 ``values``, as a 0-d tensor.

    The dispatcher picks the path as for the Triton kernels: the radix select
    where the backend takes the fast path (CUDA tensors by default, or
    ``DATAPRUNING_KERNELS=triton``), ``kthvalue`` elsewhere; the radix select is
    probed against ``kthvalue`` once per device and dtype.
    """
    variant = (str(values.device), values.dtype)
    if take_kernel("select", lambda: variant, (values,), _probe_select, reference="kthvalue"):
        try:
            kth = radix_kth_smallest(values, k)
        except Exception as exc:  # never break a run: kthvalue gives the same value
            launch_failed("select", variant, exc, reference="kthvalue")
        else:
            record("select", "radix", PROBED)
            return kth
    return values.kthvalue(k).values


def _probe_select(variant: tuple[str, torch.dtype]) -> str | None:
    device, dtype = variant
    gen = torch.Generator().manual_seed(0)
    values = (torch.randint(-50, 50, (997,), generator=gen) / 7).to(device, dtype)
    values[::5] = 0.0
    for k in (1, 2, 333, 997):
        got, want = radix_kth_smallest(values, k), values.kthvalue(k).values
        if not torch.equal(got.cpu(), want.float().cpu()):
            return f"radix select gives {got.item()} for k={k}, kthvalue {want.item()}"
    return None


def _first_ties(ties: Tensor, quota: Tensor | int) -> Tensor:
    """The first ``quota`` True positions of ``ties`` (position order)."""
    return ties & (ties.cumsum(0) <= quota)


def smallest_mask(scores: Tensor, count: int) -> Tensor:
    """Keep-mask of 1-D ``scores``: False at the ``count`` smallest (ties: lower position).

    Equal to clearing the first ``count`` of ``torch.sort(scores, stable=True)``.
    """
    scores = scores.float() + 0.0
    if count <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if count >= scores.numel():
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = kth_smallest(scores, count)
    below = scores < threshold
    return ~(below | _first_ties(scores == threshold, count - below.sum()))


def global_masks(scores: Sequence[Tensor], caps: Sequence[int], count: int) -> list[Tensor]:
    """Keep-masks pruning the ``count`` smallest scores overall, layer i offering its ``caps[i]``.

    Each layer offers its ``caps[i]`` smallest scores (ties: lower position);
    the ``count`` smallest offers are pruned, ties taken by layer order, then
    position. Equal to stable-sorting each layer, cutting at its cap, and
    stable-sorting the concatenated offers. ``count`` must not exceed ``sum(caps)``.

    A cap only matters for a layer that would lose more than it: the select
    runs over all scores, and only layers found over their cap are cut to it
    (their own select) before the next round. Taking away offers that rank
    after the ``count``-th changes nothing, so each round is exact; a round can
    only push more layers over, so there are at most ``len(scores)`` + 1 rounds,
    and usually one.
    """
    flat = [s.flatten().float() + 0.0 for s in scores]
    if count <= 0:
        return [torch.ones_like(s, dtype=torch.bool) for s in flat]
    if count > sum(caps):
        raise DataPruningError(f"cannot prune {count} weights when the layers offer {sum(caps)}")
    offered: list[Tensor | None] = [None] * len(flat)  # None: the whole layer is on offer
    while True:
        on_offer = zip(flat, offered, strict=True)
        pool = torch.cat([s if o is None else torch.where(o, s, torch.inf) for s, o in on_offer])
        threshold = kth_smallest(pool, count)
        below, ties = [], []
        for s, o in zip(flat, offered, strict=True):
            b, t = s < threshold, s == threshold
            below.append(b if o is None else o & b)
            ties.append(t if o is None else o & t)
        # Ties at the threshold go to the earliest layers first.
        below_counts = torch.stack([b.sum() for b in below])
        tie_counts = torch.stack([t.sum() for t in ties])
        wanted = count - below_counts.sum()
        quotas = (wanted - (tie_counts.cumsum(0) - tie_counts)).clamp(min=0)
        losses = (below_counts + torch.minimum(quotas, tie_counts)).tolist()
        over = [i for i, o in enumerate(offered) if o is None and losses[i] > caps[i]]
        if not over:
            break
        for i in over:
            offered[i] = _offers(flat[i], caps[i])
    return [
        ~(b | _first_ties(t, quotas[i])) for i, (b, t) in enumerate(zip(below, ties, strict=True))
    ]


def _offers(scores: Tensor, cap: int) -> Tensor:
    """The ``cap`` smallest of ``scores`` (ties: lower position), as a mask."""
    if cap <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if cap >= scores.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    top = kth_smallest(scores, cap)
    below = scores < top
    return below | _first_ties(scores == top, cap - below.sum())
