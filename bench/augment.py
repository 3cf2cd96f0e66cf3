"""Augmentation on a 32x32 RGB image set made here: accuracy with and without it.

The acceptance set of issue 14: scikit-learn's 8x8 digits upscaled 4x (nearest
neighbour) to 32x32 and repeated over 3 channels, so it has the shape of
CIFAR-10 images and trains through the same ResNet-18 (``--width`` channels in
its first stage, small for a CPU). One run per ``--augment`` recipe and seed, same
seeds, same steps; the figures are test accuracies (final and best) and
training seconds (noisy on a shared machine; the load average is recorded).

    .venv/bin/python bench/augment.py     # writes bench/results/augment.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "augment.json"


def digits_32x32():
    """The ``digits`` source's split, each 8x8 image upscaled to 3x32x32 in [0, 1]."""
    from dataclasses import replace

    from datapruning.data.sources import load_dataset

    digits = load_dataset("digits")

    def upscale(x: np.ndarray) -> np.ndarray:
        images = x.reshape(-1, 1, 8, 8)
        big = images.repeat(4, axis=2).repeat(4, axis=3)
        return np.ascontiguousarray(big.repeat(3, axis=1), dtype=np.float32)

    return replace(
        digits,
        name="digits32",
        x_train=upscale(digits.x_train),
        x_test=upscale(digits.x_test),
        default_model="resnet18",
        default_augment="none",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--width", type=int, default=4, help="ResNet-18 first-stage channels")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--augment", nargs="+", default=["none", "crop_flip"])
    parser.add_argument("--progress", action="store_true", help="a progress bar per run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from datapruning._io import write_json
    from datapruning.config import ModelConfig, TrainConfig
    from datapruning.train.loop import train

    data = digits_32x32()
    model = ModelConfig(name="resnet18", params={"width": args.width})
    runs = []
    for seed in range(args.seeds):
        for recipe in args.augment:
            cfg = TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=seed,
                augment=recipe,
                threads=args.threads,
                eval_every=max(1, args.epochs // 4),
                targets=[0.9, 0.95],
            )
            summary = train(data, model, cfg, progress=args.progress).summary
            runs.append(
                {
                    "augment": recipe,
                    "seed": seed,
                    "final_test_acc": summary["final_test_acc"],
                    "best_test_acc": summary["best_test_acc"],
                    "train_seconds": round(summary["train_seconds"], 2),
                    "steps": summary["steps"],
                }
            )
            print(runs[-1], file=sys.stderr)
    from provenance import provenance

    mean = {
        recipe: float(np.mean([r["final_test_acc"] for r in runs if r["augment"] == recipe]))
        for recipe in args.augment
    }
    write_json(
        args.out,
        {
            **provenance(__file__, argv),
            "dataset": f"{data.describe()} (digits 8x8 upscaled 4x, 3 channels)",
            "model": {"name": "resnet18", "width": args.width},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr},
            "runs": runs,
            "mean_final_test_acc": mean,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
