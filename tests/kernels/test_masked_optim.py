"""Masked SGD / AdamW: Triton (interpreted) and torch paths against torch.optim + masked_fill."""

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datapruning.config import sparsity_config
from datapruning.errors import DataPruningError
from datapruning.kernels import forced_backend
from datapruning.kernels.masked_optim import MaskedAdamW, MaskedSGD
from datapruning.train.sparsity import MagnitudePruner

SIZES = (1, 7, 1000, 4099)
SETTINGS = {
    "sgd": (MaskedSGD, torch.optim.SGD, {"lr": 0.1}),
    "sgd-momentum-dampening": (
        MaskedSGD,
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-2},
    ),
    "sgd-nesterov": (
        MaskedSGD,
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    ),
    "adamw": (MaskedAdamW, torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.05}),
}


def params_and_masks(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(n, generator=gen).to(dtype)) for n in SIZES]
    # the 1-element tensor stays unmasked; the others keep about 10%
    masks = {p: torch.rand(p.shape, generator=gen) < 0.1 for p in params[1:]}
    return params, masks


def today(params, masks, torch_cls, kwargs, grads):
    """The pipeline the masked optimizers replace: torch's step, then masked_fill of all."""
    opt = torch_cls(params, foreach=True, **kwargs)
    for p, m in masks.items():
        p.data.masked_fill_(~m, 0)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for p, m in masks.items():
            p.data.masked_fill_(~m, 0)
            for v in opt.state[p].values():
                if v.shape == p.shape:
                    v.masked_fill_(~m, 0)
    return opt


def masked_run(params, masks, cls, kwargs, grads, poison=True):
    opt = cls(params, masks=masks, **kwargs)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
            if poison and p in masks:  # what a pruned weight's gradient holds must not matter
                p.grad[~masks[p]] = (
                    torch.tensor([float("nan"), float("inf")])
                    .repeat(p.numel())[: int((~masks[p]).sum())]
                    .to(p.dtype)
                )
        opt.step()
    return opt


def random_grads(params, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=gen).to(p.dtype) for p in params] for _ in range(steps)]


def assert_pruned_are_plus_zero(opt, masks):
    for p, m in masks.items():
        tensors = [p.detach(), *(v for v in opt.state[p].values() if v.shape == p.shape)]
        for t in tensors:
            pruned = t[~m]
            assert (pruned == 0).all() and not pruned.signbit().any()


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_fp32_matches_torch_then_masked_fill(setting, backend):
    cls, torch_cls, kwargs = SETTINGS[setting]
    params, masks = params_and_masks(torch.float32)
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    twin_masks = {t: masks[p] for p, t in zip(params, twins, strict=True) if p in masks}
    grads = random_grads(params, steps=4)
    with forced_backend(backend):
        opt = masked_run(params, masks, cls, kwargs, grads)
    ref = today(twins, twin_masks, torch_cls, kwargs, grads)
    for p, t in zip(params, twins, strict=True):
        torch.testing.assert_close(p.detach(), t.detach(), atol=1e-6, rtol=0)
        for key, value in ref.state[t].items():
            torch.testing.assert_close(opt.state[p][key], value, atol=1e-6, rtol=0)
    assert_pruned_are_plus_zero(opt, masks)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_bf16_kernel_matches_reference(setting):
    cls, _, kwargs = SETTINGS[setting]
    runs = []
    for backend in ("triton", "torch"):
        params, masks = params_and_masks(torch.bfloat16)
        grads = random_grads(params, steps=4)
        with forced_backend(backend):
            runs.append((params, masks, masked_run(params, masks, cls, kwargs, grads)))
    (kernel, masks, opt), (reference, _, _) = runs
    for a, b in zip(kernel, reference, strict=True):
        assert a.dtype == torch.bfloat16
        # the kernel rounds once per stored value, torch once per op: a few bf16 ulps
        torch.testing.assert_close(a.detach().float(), b.detach().float(), atol=3e-2, rtol=2e-2)
    assert_pruned_are_plus_zero(opt, masks)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("setting", ["sgd-nesterov", "adamw"])
def test_state_dict_round_trips_and_matches_torch_layout(setting, backend):
    cls, torch_cls, kwargs = SETTINGS[setting]
    params, masks = params_and_masks(torch.float32)
    grads = random_grads(params, steps=4)
    with forced_backend(backend):
        opt = masked_run(params, masks, cls, kwargs, grads[:2])
        saved = copy.deepcopy(opt.state_dict())  # as a checkpoint file holds it
        copies = [nn.Parameter(p.detach().clone()) for p in params]
        resumed = cls(copies, **kwargs)
        resumed.load_state_dict(saved)
        resumed.set_masks({c: masks[p] for p, c in zip(params, copies, strict=True) if p in masks})
        for o, ps in ((opt, params), (resumed, copies)):
            for step_grads in grads[2:]:
                for p, g in zip(ps, step_grads, strict=True):
                    p.grad = g.clone()
                o.step()
    for p, c in zip(params, copies, strict=True):
        assert torch.equal(p, c)
    # torch's own optimizer takes the checkpoint as is
    plain = torch_cls([nn.Parameter(p.detach().clone()) for p in params], **kwargs)
    plain.load_state_dict(saved)
    assert set(plain.state_dict()["state"][1]) == set(saved["state"][1])


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_lambda_lr_drives_the_masked_step(backend):
    params, masks = params_and_masks(torch.float32)
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    twin_masks = {t: masks[p] for p, t in zip(params, twins, strict=True) if p in masks}
    opt = MaskedSGD(params, lr=0.1, momentum=0.9, masks=masks)
    ref = torch.optim.SGD(twins, lr=0.1, momentum=0.9)
    for t, m in twin_masks.items():
        t.data.masked_fill_(~m, 0)
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1 / (1 + s)) for o in (opt, ref)]
    with forced_backend(backend):
        for step_grads in random_grads(params, steps=3):
            for ps, o in ((params, opt), (twins, ref)):
                for p, g in zip(ps, step_grads, strict=True):
                    p.grad = g.clone()
                o.step()
            for t, m in twin_masks.items():
                t.data.masked_fill_(~m, 0)
                ref.state[t]["momentum_buffer"].masked_fill_(~m, 0)
            for s in schedules:
                s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 4)
    for p, t in zip(params, twins, strict=True):
        torch.testing.assert_close(p.detach(), t.detach(), atol=1e-6, rtol=0)


def test_set_masks_zeroes_weights_and_state_at_once_and_without_grad():
    params, masks = params_and_masks(torch.float32)
    opt = masked_run(params, {}, MaskedAdamW, {"lr": 1e-2}, random_grads(params, steps=1))
    assert all((p != 0).all() for p in params)
    opt.set_masks(masks)
    assert_pruned_are_plus_zero(opt, masks)
    for p in params:
        p.grad = None
    with torch.no_grad():
        params[1].add_(1.0)  # someone writes the weights; a step without grads re-zeroes
    opt.step()
    assert_pruned_are_plus_zero(opt, masks)


def test_replaces_the_pruners_pipeline():
    """GMP on a small MLP: MaskedSGD + set_masks equals torch SGD + MagnitudePruner.apply."""
    cfg = sparsity_config(target=0.9, start=1, end=6, every=2, prune_first_last=True)
    runs = []
    for masked in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))
        pruner = MagnitudePruner(model, cfg, total_steps=8)
        kwargs = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}
        opt = (
            MaskedSGD(model.parameters(), **kwargs)
            if masked
            else torch.optim.SGD(model.parameters(), **kwargs)
        )
        gen = torch.Generator().manual_seed(1)
        for step in range(1, 9):
            x, y = torch.randn(16, 12, generator=gen), torch.randint(0, 3, (16,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if masked:
                before = pruner.last_update
                pruner.step(step)
                if pruner.last_update != before:
                    opt.set_masks({pruner.weights[n]: m for n, m in pruner.masks.items()})
            else:
                pruner.step(step, opt)
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    weights = torch.cat([runs[1][0].flatten(), runs[1][2].flatten()])
    assert (weights == 0).float().mean().item() == pytest.approx(0.9, abs=1e-3)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (lambda p: {p: torch.ones(3, 4, dtype=torch.bool)}, r"has shape \(3, 4\)"),
        (lambda p: {p: torch.ones(p.shape)}, "torch.float32, not torch.bool"),
        (lambda p: {p: torch.ones(p.shape, dtype=torch.bool, device="meta")}, "on meta"),
        (
            lambda p: {nn.Parameter(torch.ones(5)): torch.ones(5, dtype=torch.bool)},
            "not a parameter",
        ),
    ],
)
def test_bad_masks_are_one_line_and_name_the_tensor(bad, fragment):
    params, _ = params_and_masks(torch.float32)
    opt = MaskedSGD(params, lr=0.1)
    with pytest.raises(DataPruningError, match=fragment) as info:
        opt.set_masks(bad(params[2]))
    message = str(info.value)
    assert "\n" not in message
    assert (
        "(5,)" in message if "not a parameter" in fragment else "['params'][2] (1000,)" in message
    )
    named = MaskedSGD(nn.Linear(3, 2).named_parameters(), lr=0.1)
    weight = named.param_groups[0]["params"][0]
    with pytest.raises(DataPruningError, match=r"the mask of weight \(2, 3\) has shape \(3, 2\)"):
        named.set_masks({weight: torch.ones(3, 2, dtype=torch.bool)})
    with pytest.raises(DataPruningError, match="amsgrad"):
        MaskedAdamW(params, amsgrad=True)


def test_imports_and_steps_without_triton():
    # datapruning.kernels must work on a machine with torch only (the reference path)
    script = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from datapruning.kernels.masked_optim import MaskedAdamW\n"
        "from datapruning.kernels.masks import nm_mask\n"
        "p = torch.nn.Parameter(torch.randn(8, 8))\n"
        "keep = nm_mask(p, 2, 4)\n"
        "opt = MaskedAdamW([p], masks={p: keep})\n"
        "p.grad = torch.ones_like(p)\n"
        "opt.step()\n"
        "assert (p[~keep] == 0).all() and (p[keep] != 0).all()\n"
    )
    env = {**os.environ, "DATAPRUNING_KERNELS": "auto"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
