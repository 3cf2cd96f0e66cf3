"""Masked optimizer steps and mask selects, against torch's optimizers and today's masking.

    python bench/kernel_optim.py [--device cpu|cuda] [--quick]

writes bench/results/kernel_optim_<device>.json. For the ResNet-18 and ViT
parameter sets (``models.build_model``, CIFAR-shaped input, 10 classes), with
90% global magnitude masks on the layers the pruner selects by default:

- the optimizer step alone (gradients fixed, state carried over steps): today's
  pipeline, torch's foreach (and ``fused=True`` where the device has it)
  SGD/AdamW followed by MagnitudePruner.apply's ``masked_fill_`` of the weights
  and each state tensor, against MaskedSGD/MaskedAdamW; and the masked step
  against the same optimizer without masks (and torch's unmasked fused one);
- the global-magnitude masks at ResNet-18 scale: today's two stable sorts
  against :func:`datapruning.kernels.masks.global_masks` (checked equal), and
  the N:M (2:4) mask, today's topk+scatter against :func:`nm_mask`.

On CPU the masked optimizers take their torch reference path (Triton on CPU is
only its interpreter, which is not timed); on CUDA, the Triton kernels. Times
are medians over repeats after a warm-up: on CUDA wall time, synchronised; on
CPU this process's CPU time with one torch thread, since the CPU machine is
shared and its wall clock swings by 2-5x with other jobs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from datapruning._io import write_json
from datapruning.config import sparsity_config
from datapruning.kernels import use_triton
from datapruning.kernels.masked_optim import MaskedAdamW, MaskedSGD
from datapruning.kernels.masks import global_masks, nm_mask
from datapruning.models import build_model
from datapruning.train.sparsity import _floor_count, select_weights

MODELS = {"resnet18": (3, 32, 32), "vit": (3, 32, 32)}
OPTIMIZERS: dict[str, tuple[type, type, dict[str, Any]]] = {
    "sgd": (
        MaskedSGD,
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    ),
    "adamw": (MaskedAdamW, torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.05}),
}
SPARSITY = 0.9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_ms(fn: Callable[[], Any], device: str, repeats: int, warmup: int = 2) -> float:
    # On CPU: this process's CPU time on one thread, which other jobs on a shared
    # machine disturb far less than the wall clock. On CUDA: wall time, synchronised.
    clock = time.perf_counter if device.startswith("cuda") else time.process_time
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = clock()
        fn()
        _sync(device)
        times.append((clock() - start) * 1e3)
    return statistics.median(times)


def _setup(name: str, device: str) -> tuple[list[torch.nn.Parameter], dict[Any, torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model(name, MODELS[name], 10).to(device)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    weights = list(select_weights(model, sparsity_config(target=SPARSITY)).values())
    caps = [w.numel() - _floor_count(w.numel(), 0.02) for w in weights]
    size = sum(w.numel() for w in weights)
    keeps = global_masks([w.detach().abs() for w in weights], caps, round(SPARSITY * size))
    masks = {w: k.view_as(w) for w, k in zip(weights, keeps, strict=True)}
    return params, masks


def _torch_then_mask(opt: torch.optim.Optimizer, pruned: dict[Any, torch.Tensor]) -> None:
    """Today's pipeline: the optimizer step, then MagnitudePruner.apply's masked_fill_."""
    opt.step()
    with torch.no_grad():
        for weight, mask in pruned.items():
            weight.masked_fill_(mask, 0)
            for value in opt.state.get(weight, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                    value.masked_fill_(mask, 0)


def _fused_supported(torch_cls: type, params: list[torch.Tensor], kwargs: dict[str, Any]) -> bool:
    try:
        probe = torch_cls([torch.nn.Parameter(params[0].detach().clone())], fused=True, **kwargs)
        probe.param_groups[0]["params"][0].grad = torch.zeros_like(params[0])
        probe.step()
    except (RuntimeError, ValueError):
        return False
    return True


def bench_steps(name: str, device: str, repeats: int) -> dict[str, Any]:
    params, masks = _setup(name, device)
    pruned = {w: ~m for w, m in masks.items()}
    masked_share = sum(m.numel() for m in masks.values()) / sum(p.numel() for p in params)
    out: dict[str, Any] = {
        "parameters": sum(p.numel() for p in params),
        "tensors": len(params),
        "masked_tensors": len(masks),
        "masked_share_of_parameters": round(masked_share, 4),
        "kept_share_of_masked": round(
            sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()), 4
        ),
    }
    for opt_name, (masked_cls, torch_cls, kwargs) in OPTIMIZERS.items():
        fused = _fused_supported(torch_cls, params, kwargs)
        contenders: dict[str, Callable[[], Any]] = {}
        foreach = torch_cls(params, foreach=True, **kwargs)
        contenders["torch_foreach_then_masked_fill"] = lambda o=foreach: _torch_then_mask(o, pruned)
        if fused:
            fused_opt = torch_cls(params, fused=True, **kwargs)
            contenders["torch_fused_then_masked_fill"] = lambda o=fused_opt: _torch_then_mask(
                o, pruned
            )
            contenders["torch_fused_unmasked"] = torch_cls(params, fused=True, **kwargs).step
        contenders["masked"] = masked_cls(params, masks=masks, **kwargs).step
        contenders["masked_class_unmasked"] = masked_cls(params, **kwargs).step
        ms = {key: round(_median_ms(fn, device, repeats), 3) for key, fn in contenders.items()}
        best_torch = min(v for k, v in ms.items() if k.endswith("then_masked_fill"))
        out[opt_name] = {
            "ms": ms,
            "masked_path": "triton" if use_triton(*params) else "torch reference (foreach)",
            "speedup_masked_vs_best_torch_then_mask": round(best_torch / ms["masked"], 3),
            "masked_over_unmasked_same_class": round(ms["masked"] / ms["masked_class_unmasked"], 3),
            **(
                {
                    "masked_over_torch_fused_unmasked": round(
                        ms["masked"] / ms["torch_fused_unmasked"], 3
                    )
                }
                if fused
                else {}
            ),
        }
    return out


def _sorted_global_masks(
    scores: list[torch.Tensor], caps: list[int], count: int
) -> list[torch.Tensor]:
    """MagnitudePruner._global_masks before this change: two stable sorts."""
    order, offers, owners = [], [], []
    for i, (s, cap) in enumerate(zip(scores, caps, strict=True)):
        values, index = torch.sort(s, stable=True)
        order.append(index)
        offers.append(values[:cap])
        owners.append(torch.full((cap,), i, dtype=torch.long, device=s.device))
    chosen = torch.sort(torch.cat(offers), stable=True).indices[:count]
    per_layer = torch.bincount(torch.cat(owners)[chosen], minlength=len(scores)).tolist()
    masks = []
    for i, s in enumerate(scores):
        keep = torch.ones(s.numel(), dtype=torch.bool, device=s.device)
        keep[order[i][: per_layer[i]]] = False
        masks.append(keep)
    return masks


def _topk_nm(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    groups = weight.detach().abs().reshape(weight.shape[0], -1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, groups.topk(n, dim=2).indices, True)
    return keep.view_as(weight)


def bench_masks(device: str, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model("resnet18", MODELS["resnet18"], 10).to(device)
    weights = list(select_weights(model, sparsity_config(target=SPARSITY)).values())
    # scores as the pruner sees them mid-schedule: half the target already pruned (-1)
    scores = []
    for w in weights:
        s = w.detach().abs().flatten().float()
        scores.append(torch.where(torch.rand_like(s) < SPARSITY / 2, -1.0, s))
    caps = [w.numel() - _floor_count(w.numel(), 0.02) for w in weights]
    count = round(SPARSITY * sum(w.numel() for w in weights))
    same = all(
        torch.equal(a, b)
        for a, b in zip(
            global_masks(scores, caps, count),
            _sorted_global_masks(scores, caps, count),
            strict=True,
        )
    )
    nm_weights = [w for w in weights if w[0].numel() % 4 == 0]
    # topk's order among equal |w| is unspecified, nm_mask's is lower index first:
    # count the groups where they differ, and those of them without a tie.
    nm_differ = nm_differ_untied = 0
    for w in nm_weights:
        differ = (nm_mask(w, 2, 4) != _topk_nm(w, 2, 4)).reshape(-1, 4).any(dim=1)
        groups = w.detach().abs().reshape(-1, 4)
        tied = (groups.unsqueeze(1) == groups.unsqueeze(2)).sum(dim=(1, 2)) > 4
        nm_differ += int(differ.sum())
        nm_differ_untied += int((differ & ~tied).sum())
    ms = {
        "global_sorted_today": _median_ms(
            lambda: _sorted_global_masks(scores, caps, count), device, repeats
        ),
        "global_select": _median_ms(lambda: global_masks(scores, caps, count), device, repeats),
        "nm_2_4_topk_today": _median_ms(
            lambda: [_topk_nm(w, 2, 4) for w in nm_weights], device, repeats
        ),
        "nm_2_4": _median_ms(lambda: [nm_mask(w, 2, 4) for w in nm_weights], device, repeats),
    }
    return {
        "scored_weights": sum(w.numel() for w in weights),
        "layers": len(weights),
        "masks_equal_today": same,
        "nm_groups_differing_from_topk": nm_differ,
        "nm_groups_differing_from_topk_without_a_tie": nm_differ_untied,
        "nm_path": "triton" if use_triton(*nm_weights) else "torch reference (stable sort)",
        "ms": {k: round(v, 3) for k, v in ms.items()},
        "speedup_global_select": round(ms["global_sorted_today"] / ms["global_select"], 3),
        "speedup_nm": round(ms["nm_2_4_topk_today"] / ms["nm_2_4"], 3),
    }


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        found["triton"] = version("triton")
    except PackageNotFoundError:
        found["triton"] = "absent"
    return found


def run(device: str = "cpu", quick: bool = False) -> dict[str, Any]:
    """All figures for ``device`` as a dict (also what ``__main__`` writes)."""
    repeats = 3 if quick else 7
    if not device.startswith("cuda"):
        torch.set_num_threads(1)
    machine: dict[str, Any] = {
        "device": device,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "clock": "wall, synchronised"
        if device.startswith("cuda")
        else "process CPU time, one torch thread (the machine is shared)",
        "platform": platform.platform(),
        "processor": platform.processor(),
        "load_average_1m": os.getloadavg()[0],
    }
    if device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name(device)
    return {
        "sparsity": SPARSITY,
        "repeats": repeats,
        "steps": {name: bench_steps(name, device, repeats) for name in MODELS},
        "masks_resnet18": bench_masks(device, repeats),
        "machine": machine,
        "versions": _versions(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    report = {"command": " ".join(["python", *sys.argv]), **run(args.device, args.quick)}
    out = Path(__file__).resolve().parent / f"results/kernel_optim_{args.device.split(':')[0]}.json"
    write_json(out, report)
    print(out)


if __name__ == "__main__":
    main()
