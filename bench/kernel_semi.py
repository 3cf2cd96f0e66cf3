"""2:4 semi-structured linear vs dense, forward+backward, at ViT-L MLP shapes in bf16.

    python bench/kernel_semi.py [--device cuda] [--quick] [--results bench/results/kernel_semi.json]

The issue's target: on an H100-class GPU the 2:4 path
(:func:`datapruning.kernels.semi_structured.semi_structured_linear`: prune and
pack W and Wᵀ every step, sparse forward and input gradient, dense weight
gradient) is at least 1.2x faster than the dense ``F.linear`` for a ViT-L MLP
(8192 tokens, 1024 -> 4096 -> 1024). Each layer and the whole block (fc1, GELU,
fc2) are timed forward+backward, with fp32 master weights cast to bf16 as under
autocast, against the dense linear and against the dense *masked* linear (what
sparse training costs without the kernels). The largest difference from the
dense masked result is recorded too. On CPU the bench records that the path
is CUDA-only and measures nothing. :func:`run` is what a GPU check script calls.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from datapruning._io import write_json
from datapruning.kernels import semi_structured as semi

TOKENS, DIM, HIDDEN = 8192, 1024, 4096
DTYPE = torch.bfloat16


def _machine(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        info["capability"] = f"sm{major}{minor}"
        info["cuda"] = torch.version.cuda
    return info


def _ms(fn: Callable[[], None], repeats: int) -> float:
    for _ in range(3):  # warm-up: cuSPARSELt plans, cuBLAS handles, allocator
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def run(device: str = "cpu", quick: bool = False) -> dict[str, Any]:
    """Times the three paths on ``device``; on CPU (or a GPU before sm80) says why it skipped."""
    result: dict[str, Any] = {
        "shapes": {"tokens": TOKENS, "dim": DIM, "hidden": HIDDEN, "dtype": "bfloat16"},
        "machine": _machine(device),
    }
    reason = semi.device_reason(device)
    if reason is not None:
        result["skipped"] = reason
        return result
    repeats = 5 if quick else 30
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(TOKENS, DIM, device=device, dtype=DTYPE, generator=gen, requires_grad=True)
    w1 = torch.randn(HIDDEN, DIM, device=device, generator=gen).mul_(DIM**-0.5).requires_grad_()
    w2 = torch.randn(DIM, HIDDEN, device=device, generator=gen).mul_(HIDDEN**-0.5).requires_grad_()
    g_hidden = torch.randn(TOKENS, HIDDEN, device=device, dtype=DTYPE, generator=gen)
    g_out = torch.randn(TOKENS, DIM, device=device, dtype=DTYPE, generator=gen)
    masks = {id(w): semi.tile_mask(w.detach().to(DTYPE)) for w in (w1, w2)}

    def dense(xx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.linear(xx, w.to(DTYPE))

    def masked(xx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.linear(xx, (w * masks[id(w)]).to(DTYPE))

    def sparse(xx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return semi.semi_structured_linear(xx, w, None, decay=2e-4)

    paths = {"dense": dense, "dense_masked": masked, "semi_structured": sparse}
    timings: dict[str, dict[str, float]] = {}
    for case, (inp, weight, grad) in {
        "fc1 1024->4096": (x, w1, g_hidden),
        "fc2 4096->1024": (None, w2, g_out),
    }.items():
        if inp is None:
            inp = torch.randn(TOKENS, HIDDEN, device=device, dtype=DTYPE, generator=gen)
            inp.requires_grad_(True)
        timings[case] = {
            name: _ms(lambda f=f, i=inp, w=weight, g=grad: f(i, w).backward(g), repeats)
            for name, f in paths.items()
        }

    def block(f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return f(F.gelu(f(x, w1)), w2)

    timings["mlp block"] = {
        name: _ms(lambda f=f: block(f).backward(g_out), repeats) for name, f in paths.items()
    }
    with torch.no_grad():
        ref, out = block(masked).float(), block(sparse).float()
    for figures in timings.values():
        figures["speedup_vs_dense"] = figures["dense"] / figures["semi_structured"]
        figures["speedup_vs_dense_masked"] = figures["dense_masked"] / figures["semi_structured"]
    result["ms_fwd_bwd"] = timings
    result["max_abs_err_vs_dense_masked"] = (out - ref).abs().max().item()
    result["ref_max_abs"] = ref.abs().max().item()
    result["repeats"] = repeats
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--results", type=Path, default=Path(__file__).resolve().parent / "results/kernel_semi.json"
    )
    args = parser.parse_args()
    result = run(args.device, args.quick)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), **result}
    write_json(args.results, result)
    for case, figures in result.get("ms_fwd_bwd", {}).items():
        print(
            f"{case}: dense {figures['dense']:.3f} ms, masked {figures['dense_masked']:.3f} ms, "
            f"2:4 {figures['semi_structured']:.3f} ms ({figures['speedup_vs_dense']:.2f}x)"
        )
    if "skipped" in result:
        print(f"skipped: {result['skipped']}")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
