"""Seconds per training step of ResNet-18 at each width on this CPU: the default image width.

Issue 25 item 4: an image npz defaulted to ResNet-18 at width 64 (11.2 M
parameters) and ``datapruning score --metric el2n`` ran 11 minutes with no epoch
done. This times the training step the loop takes (SGD with momentum, batch 100
of 3x32x32, one torch thread: ``train.threads``' default) at widths 64, 32, 16
and 8, and extrapolates an epoch of a CIFAR-sized set (50,000 images, 500
steps). ``datapruning.data.sources.IMAGE_WIDTH_CPU`` is the width that trains such
an epoch in minutes. The machine is a shared 2-core CPU: the load is recorded.

    .venv/bin/python bench/image_width.py     # writes bench/results/image_width.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "image_width.json"
EPOCH_IMAGES = 50_000


def step_seconds(width: int, batch: int, steps: int) -> tuple[int, float]:
    """Parameters and mean seconds per step (after one warm-up step) at ``width``."""
    from datapruning.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", (3, 32, 32), 10, width=width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # the first step allocates
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return sum(p.numel() for p in model.parameters()), (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict:
    from provenance import provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 32, 16, 8])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for width in args.widths:
        params, seconds = step_seconds(width, args.batch, args.steps)
        epoch = seconds * EPOCH_IMAGES / args.batch
        rows.append({"width": width, "parameters": params, "step_seconds": round(seconds, 4),
                     "epoch_50k_seconds": round(epoch, 1)})  # fmt: skip
        print(f"width {width}: {params:,} parameters, {seconds:.3f} s a step, "
              f"{epoch / 60:.1f} min an epoch of {EPOCH_IMAGES}", flush=True)  # fmt: skip
    result = {**provenance(__file__, argv), "batch": args.batch, "threads": args.threads,
              "rows": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
