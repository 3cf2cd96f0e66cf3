"""The CUDA path against the reference: masked SGD, masked AdamW, N:M masks, the select.

Marked ``cuda`` (skipped without a GPU; bench/gpu_check.sh runs them first on a
lent GPU). Each compares the default (Triton) path with ``DATAPRUNING_KERNELS``
forced to torch on the same inputs, checks that the record says Triton ran,
that the steady step and the radix select queue without a host sync
(``torch.cuda.set_sync_debug_mode("error")``), and that a second GPU gets its
own launches (the device guards).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from datapruning.kernels import forced_backend, paths_taken
from datapruning.kernels.masked_optim import MaskedAdamW, MaskedSGD
from datapruning.kernels.masks import kth_smallest, nm_mask, nm_mask_reference

pytestmark = pytest.mark.cuda

SETTINGS = {
    "sgd": (MaskedSGD, {"lr": 0.1}),
    "sgd-momentum": (
        MaskedSGD,
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-2},
    ),
    "sgd-nesterov": (
        MaskedSGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    ),
    "adamw": (MaskedAdamW, {"lr": 1e-2, "weight_decay": 0.05}),
}
KERNEL = {MaskedSGD: "masked_sgd", MaskedAdamW: "masked_adamw"}


def optimizer_run(
    cls: type, kwargs: dict[str, Any], backend: str, dtype: torch.dtype, device: str = "cuda"
) -> tuple[list[nn.Parameter], torch.optim.Optimizer]:
    gen = torch.Generator().manual_seed(0)
    params = [
        nn.Parameter(torch.randn(n, generator=gen).to(device, dtype)) for n in (1, 7, 1000, 70001)
    ]
    masks = {p: (torch.rand(p.shape, generator=gen) < 0.1).to(device) for p in params[1:]}
    opt = cls(params, masks=masks, **kwargs)
    grads = [
        [torch.randn(p.shape, generator=gen).to(device, dtype) for p in params] for _ in range(5)
    ]
    for p in params:
        p.grad = torch.zeros_like(p)
    with forced_backend(backend):
        for step, step_grads in enumerate(grads):
            for p, g in zip(params, step_grads, strict=True):
                p.grad.copy_(g)  # in place: the steady loop's gradients keep their addresses
            if step >= 2 and backend == "auto":
                torch.cuda.set_sync_debug_mode("error")  # no host sync in a steady step
            try:
                opt.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return params, opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_masked_optimizers_on_cuda_match_the_reference(setting, dtype):
    cls, kwargs = SETTINGS[setting]
    fused, fused_opt = optimizer_run(cls, kwargs, "auto", dtype)
    assert paths_taken()[KERNEL[cls]]["path"] == "triton"
    reference, reference_opt = optimizer_run(cls, kwargs, "torch", dtype)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 2e-2}
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a.detach().float(), b.detach().float(), **tol)
        for key, value in reference_opt.state[b].items():
            got = fused_opt.state[a][key]
            torch.testing.assert_close(got.float().cpu(), value.float().cpu(), **tol)
    assert fused_opt._addresses.builds <= 4  # per launch variant, not per step


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_nm_mask_on_cuda_matches_the_reference(n, m, dtype):
    gen = torch.Generator().manual_seed(0)
    for weight in (
        torch.randn(256, 512, generator=gen),
        (torch.randint(-2, 3, (64, 64), generator=gen) / 2),  # ties everywhere
    ):
        weight = weight.to("cuda", dtype)
        got = nm_mask(weight, n, m)
        assert torch.equal(got.cpu(), nm_mask_reference(weight.cpu(), n, m))
    assert paths_taken()["nm_mask"]["path"] == "triton"


def test_the_radix_select_on_cuda_equals_kthvalue_without_a_sync():
    gen = torch.Generator().manual_seed(0)
    values = (torch.randint(-500, 500, (1_000_003,), generator=gen) / 7).cuda()
    kth_smallest(values, 1)  # the probe (it compares, so it syncs) runs once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = [kth_smallest(values, k) for k in (1, 2, 500_000, 1_000_003)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    want = [values.cpu().kthvalue(k).values for k in (1, 2, 500_000, 1_000_003)]
    assert [g.item() for g in got] == [w.item() for w in want]
    assert paths_taken()["select"]["path"] == "radix"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_launches_go_to_the_tensors_device():
    torch.cuda.set_device(0)
    params, _ = optimizer_run(
        MaskedSGD, SETTINGS["sgd-momentum"][1], "auto", torch.float32, "cuda:1"
    )
    reference, _ = optimizer_run(
        MaskedSGD, SETTINGS["sgd-momentum"][1], "torch", torch.float32, "cuda:1"
    )
    for a, b in zip(params, reference, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), atol=1e-5, rtol=1e-5)
    weight = torch.randn(64, 64, device="cuda:1")
    assert torch.equal(nm_mask(weight, 2, 4).cpu(), nm_mask_reference(weight.cpu(), 2, 4))
