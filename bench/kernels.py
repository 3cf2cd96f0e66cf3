"""Every kernel benchmark in one run, into one JSON with the command, machine and versions.

    python bench/kernels.py                  # CPU: bench/results/kernels.json
    python bench/kernels.py --device cuda    # GPU: bench/results/kernels_<gpu name>.json
    python bench/kernels.py --quick --only kd optim

Each part is its own script beside this one (Liger-Kernel and torchao keep one
benchmark per kernel): ``kernel_kd.py`` (fused KD loss vs cross_entropy + kl_div),
``kernel_optim.py`` (fused masked SGD/AdamW vs torch's optimizers then masking;
the global-magnitude threshold), ``kernel_semi.py`` (2:4 semi-structured Linear vs
dense, CUDA only) and ``kernel_step.py`` (the whole training step). Each exposes
``run(device, quick) -> dict`` (``kernel_kd`` also ``threads``, given ``--threads``)
and runs alone as well. Parts run in this order and the JSON is rewritten after
each, so a part that fails or a run cut short keeps the others' figures. The parts import only
torch, triton and the library (no Prefect, faiss or FFCV), so the GPU machine
runs them with its own Python stack (``bench/gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
PARTS = ("kd", "optim", "semi", "step")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run these parts only")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads for the parts that take them (kernel_kd); kernel_optim and "
        "kernel_step time CPU steps on one thread whatever this says",
    )
    parser.add_argument("--out", type=Path, help="default: bench/results/kernels[_<gpu>].json")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu")

    if not args.device.startswith("cuda"):
        # Triton reads this when it is first imported (machine() below imports it): on
        # CPU its kernels run only in the interpreter (kernel_kd measures the fused
        # kernel's saved bytes there), as kernel_kd.py alone sets it too.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    sys.path.insert(0, str(BENCH))
    from provenance import kernel_machine

    from datapruning._io import write_json

    info = kernel_machine(args.device)
    out = args.out
    if out is None:
        gpu = info.get("gpu")
        suffix = "" if gpu is None else "_" + re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
        out = BENCH / "results" / f"kernels{suffix}.json"
    result: dict[str, Any] = {
        "command": " ".join(
            ["python", "bench/kernels.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "device": args.device,
        "machine": info,
        "parts": {},
    }
    for part in args.only or PARTS:
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"kernel_{part}")
            options: dict[str, Any] = {"device": args.device, "quick": args.quick}
            if args.threads is not None and "threads" in inspect.signature(module.run).parameters:
                options["threads"] = args.threads
            figures = module.run(**options)
        except Exception as exc:  # one broken part must not lose the others' figures
            traceback.print_exc()
            figures = {"error": f"{exc.__class__.__name__}: {exc}"}
        figures["bench_seconds"] = round(time.perf_counter() - start, 1)
        result["parts"][part] = figures
        print(f"{part}: done in {figures['bench_seconds']} s", file=sys.stderr)
        write_json(out, result)  # after every part, so a timeout keeps what finished
    print(f"wrote {out}", file=sys.stderr)
    return 1 if any("error" in figures for figures in result["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
