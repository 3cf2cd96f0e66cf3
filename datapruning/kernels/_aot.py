"""Ahead-of-time compilation of every Triton kernel, as the wrappers launch it, for sm_80/sm_90.

The kernels were written and tested without a GPU (Triton's interpreter runs
them on CPU), so a kernel that the interpreter accepts but the compiler does
not, or that spills registers, would first show on a user's GPU. The installed
Triton ships ``ptxas`` (and ``cuobjdump``), so each launch variant can be
compiled here down to a cubin for a chosen architecture without a GPU, and its
registers and local-memory (spill) bytes read from the cubin. The variants are
the wrappers' own: the class counts' launch constants come from
:func:`datapruning.kernels.kd_loss._config`, the N:M tile from
:func:`~datapruning.kernels.masks.nm_groups_per_program`, the optimizer's block
from ``masked_optim._BLOCK``.

Compilation needs the real ``@triton.jit`` functions, not the interpreter's, so
run this in a process with ``TRITON_INTERPRET=0`` (tests/kernels/test_aot.py
starts one)::

    TRITON_INTERPRET=0 python -m datapruning.kernels._aot            # the subset
    TRITON_INTERPRET=0 python -m datapruning.kernels._aot --all --out bench/results/kernels_aot.json

Each result line is JSON: kernel, variant, arch, dtype, registers, spill
(local) bytes, seconds, or the compile error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ARCHS = (80, 90)
DTYPES = ("fp32", "bf16")
# Class counts the KD variants cover: one-block rows of 10, 100 and 1000 classes, and a
# row of several blocks (a vocabulary).
KD_CLASSES = (10, 100, 1000, 50000)


@dataclass(frozen=True)
class Variant:
    """One launch of one kernel: its argument types, constants and warps."""

    kernel: str
    name: str
    dtype: str
    signature: dict[str, str]
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4


@dataclass
class Compiled:
    kernel: str
    name: str
    arch: int
    dtype: str
    registers: int | None = None
    spill_bytes: int | None = None
    seconds: float = 0.0
    error: str | None = None


def _kd_variants(dtype: str) -> list[Variant]:
    from datapruning.kernels import kd_loss

    out = []
    # (has_kd, has_index, has_weights, with_grad): training from a cached table, with
    # an online teacher, without KD, with InfoBatch's weights, and evaluation.
    flags = [
        (True, True, False, True),
        (True, False, False, True),
        (False, False, False, True),
        (True, True, True, True),
        (True, True, False, False),
    ]
    for classes in KD_CLASSES:
        block, rows, n_blocks, warps = kd_loss._config(classes)
        for has_kd, has_index, has_weights, with_grad in flags:
            signature = {
                "S_ptr": f"*{dtype}",
                "s_row_stride": "i32",
                "T_ptr": f"*{dtype}",
                "t_row_stride": "i32",
                "Y_ptr": "*i64",
                "IDX_ptr": "*i64",
                "W_ptr": "*fp32",
                "LOSS_ptr": "*fp32",
                "G_ptr": f"*{dtype}" if with_grad else "*fp32",
                "g_row_stride": "i32",
                "n_rows": "i32",
                "n_cols": "i32",
                "n_teacher_rows": "i32",
                "alpha": "fp32",
                "temperature": "fp32",
            }
            constexprs = {
                "HAS_KD": has_kd,
                "HAS_INDEX": has_index,
                "HAS_WEIGHTS": has_weights,
                "WITH_GRAD": with_grad,
                "ONE_BLOCK": classes <= block,
                "N_BLOCKS": n_blocks,
                "ROWS": rows,
                "BLOCK": block,
            }
            name = (
                f"C={classes} kd={int(has_kd)} index={int(has_index)} "
                f"weights={int(has_weights)} grad={int(with_grad)}"
            )
            out.append(Variant("kd_loss", name, dtype, signature, constexprs, warps))
    return out


def _optim_variants(dtype: str) -> list[Variant]:
    import triton.language as tl

    from datapruning.kernels import masked_optim

    tl_dtype = {"fp32": tl.float32, "bf16": tl.bfloat16}[dtype]
    tables = {
        "addresses": "*i64",
        "numels": "*i64",
        "block_tensor": "*i32",
        "block_start": "*i64",
        "n_tensors": "i32",
    }
    out = []
    sgd = {**tables, **dict.fromkeys(("lr", "momentum", "dampening", "weight_decay"), "fp32")}
    for masked in (False, True):
        for momentum, first, nesterov in (
            (False, False, False),
            (True, True, False),
            (True, False, False),
            (True, True, True),
            (True, False, True),
        ):
            constexprs = {
                "DTYPE": tl_dtype,
                "MASKED": masked,
                "MOMENTUM": momentum,
                "FIRST": first,
                "NESTEROV": nesterov,
                "BLOCK": masked_optim._BLOCK,
            }
            name = (
                f"masked={int(masked)} momentum={int(momentum)} first={int(first)} "
                f"nesterov={int(nesterov)}"
            )
            out.append(Variant("masked_sgd", name, dtype, sgd, constexprs))
    adamw = {
        **tables,
        **dict.fromkeys(
            ("decay_factor", "beta1", "beta2", "eps", "step_size", "bias_correction2_sqrt"),
            "fp32",
        ),
    }
    for masked in (False, True):
        constexprs = {"DTYPE": tl_dtype, "MASKED": masked, "BLOCK": masked_optim._BLOCK}
        out.append(Variant("masked_adamw", f"masked={int(masked)}", dtype, adamw, constexprs))
    return out


def _nm_variants(dtype: str) -> list[Variant]:
    import triton

    from datapruning.kernels.masks import nm_groups_per_program

    out = []
    for n, m in ((2, 4), (4, 8)):
        constexprs = {
            "N": n,
            "M": m,
            "M_POW2": triton.next_power_of_2(m),
            "GROUPS": nm_groups_per_program(m),
        }
        signature = {"w_ptr": f"*{dtype}", "out_ptr": "*i8", "n_groups": "i32"}
        out.append(Variant("nm_mask", f"{n}:{m}", dtype, signature, constexprs))
    return out


def variants(subset: bool = False) -> list[Variant]:
    """Every launch variant of every kernel per dtype; ``subset``: one or two of each kernel."""
    out = []
    for dtype in DTYPES:
        every = _kd_variants(dtype) + _optim_variants(dtype) + _nm_variants(dtype)
        if subset:
            keep = {
                "C=100 kd=1 index=1 weights=0 grad=1",  # the register-heavy one-block row
                "C=50000 kd=1 index=1 weights=1 grad=1",  # rows of several blocks
                "masked=1 momentum=1 first=0 nesterov=0",
                "masked=1",
                "2:4",
            }
            every = [v for v in every if v.name in keep]
        out += every
    return out


def _jit_function(kernel: str) -> Any:
    from datapruning.kernels import kd_loss, masked_optim, masks

    return {
        "kd_loss": kd_loss._kd_loss_kernel,
        "masked_sgd": masked_optim._sgd_kernel,
        "masked_adamw": masked_optim._adamw_kernel,
        "nm_mask": masks._nm_kernel,
    }[kernel]


def _resources(asm: dict[str, Any]) -> tuple[int, int]:
    """(registers, local bytes) of the kernel, from the bundled cuobjdump (else ptxas -v)."""
    from triton.backends.nvidia import compiler as nvidia

    bin_dir = Path(nvidia.__file__).parent / "bin"
    tool = bin_dir / "cuobjdump"
    if not tool.is_file():  # a Triton without it: the CUDA toolkit's, else ptxas -v
        found = shutil.which("cuobjdump")
        if found is None:
            return _resources_from_ptxas(bin_dir, asm["ptx"])
        tool = Path(found)
    cubin = asm["cubin"]
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        text = subprocess.run(
            [str(tool), "--dump-resource-usage", file.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    found = re.search(r"REG:(\d+).*?LOCAL:(\d+)", text)
    if found is None:
        raise RuntimeError(f"cuobjdump printed no resource usage: {text.strip()[:200]}")
    return int(found.group(1)), int(found.group(2))


def _resources_from_ptxas(bin_dir: Path, ptx: str) -> tuple[int, int]:
    """(registers, spill-store bytes) from ``ptxas -v`` on the kernel's PTX.

    Triton 3.9 assembles sm_90+ with its newer ``ptxas-blackwell``; either bundled
    ptxas that accepts the PTX will do. Without Triton's own flags it can differ
    from the cubin Triton builds (the 50 000-class KD row on sm_80: 28 bytes of
    spill stores here, none in Triton's cubin), so it is the last resort.
    """
    target = re.search(r"^\.target\s+(\S+)", ptx, re.MULTILINE)
    if target is None:
        raise RuntimeError("the PTX names no .target")
    arch = target.group(1).rstrip(",")
    tools = [bin_dir / "ptxas-blackwell", bin_dir / "ptxas"]
    if int(re.sub(r"\D", "", arch) or 0) < 90:
        tools.reverse()
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        for tool in (t for t in tools if t.is_file()):
            done = subprocess.run(
                [str(tool), f"-arch={arch}", "-v", str(source), "-o", str(Path(tmp) / "k.cubin")],
                capture_output=True,
                text=True,
            )
            registers = re.search(r"Used (\d+) registers", done.stderr)
            spills = re.search(r"(\d+) bytes spill stores", done.stderr)
            if done.returncode == 0 and registers and spills:
                return int(registers.group(1)), int(spills.group(1))
            errors.append(f"{tool.name}: {done.stderr.strip()[:200]}")
    raise RuntimeError(f"no bundled ptxas read the PTX: {'; '.join(errors) or 'none found'}")


def compile_variant(variant: Variant, arch: int) -> Compiled:
    """Compile ``variant`` for ``sm_<arch>`` with the installed Triton; errors are returned."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    result = Compiled(variant.kernel, variant.name, arch, variant.dtype)
    start = time.perf_counter()
    try:
        fn = _jit_function(variant.kernel)
        signature = dict(variant.signature)
        for name in variant.constexprs:
            signature[name] = "constexpr"
        ordered = {name: signature[name] for name in fn.arg_names}
        source = ASTSource(fn, ordered, constexprs=dict(variant.constexprs))
        compiled = triton.compile(
            source, target=GPUTarget("cuda", arch, 32), options={"num_warps": variant.num_warps}
        )
        result.registers, result.spill_bytes = _resources(compiled.asm)
    except Exception as exc:  # reported per variant: one bad variant must not hide the rest
        result.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
    result.seconds = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="every variant (default: the subset)")
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS))
    parser.add_argument("--out", type=Path, help="also write the results as one JSON file")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("compiling needs TRITON_INTERPRET=0 (the interpreter replaces @triton.jit)")
    import triton

    start = time.perf_counter()
    results = []
    for variant in variants(subset=not args.all):
        for arch in args.arch:
            result = compile_variant(variant, arch)
            results.append(result)
            print(json.dumps(asdict(result)), flush=True)
    if args.out is not None:
        import platform

        import torch

        from datapruning._io import write_json

        write_json(
            args.out,
            {
                "command": " ".join(
                    [
                        "TRITON_INTERPRET=0 python -m datapruning.kernels._aot",
                        *(argv or sys.argv[1:]),
                    ]
                ),
                "machine": {
                    "cores": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "triton": triton.__version__,
                    "triton_cache": os.environ.get("TRITON_CACHE_DIR", "default"),
                },
                "seconds": time.perf_counter() - start,
                "variants": len(results),
                "errors": sum(r.error is not None for r in results),
                "results": [asdict(r) for r in results],
            },
        )
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
