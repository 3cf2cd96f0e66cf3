"""Acceptance figures of the training loop on MNIST-1D, written as JSON.

``kd``: a student on a 30% random subset with KD from a full-data teacher
against the same subset without KD, per seed and the mean.
``rs2``: RS2 without replacement drawing 10% per epoch against a static random
10% subset, at an equal number of optimizer steps, per seed and the mean.

    python bench/loop_acceptance.py kd --out bench/results/kd_vs_plain.json
    python bench/loop_acceptance.py rs2 --out bench/results/rs2_vs_static.json
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from provenance import provenance

from datapruning._io import write_json
from datapruning.config import DataConfig, KDConfig, ModelConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.scores import select_positions
from datapruning.train.loop import train

DATASET = {"num_samples": 5000, "seed": 42}  # the quickstart's MNIST-1D: 4000 train / 1000 test
MODEL = ModelConfig(name="convnet1d", params={"channels": 32})


def kd_vs_plain(args: argparse.Namespace) -> dict[str, Any]:
    data = load_dataset("mnist1d", DATASET)
    base = TrainConfig(epochs=args.epochs, eval_every=0, targets=[0.9])
    teacher = train(data, MODEL, base, progress=False)
    alpha: float | str = args.alpha if args.alpha == "auto" else float(args.alpha)
    kd = KDConfig(alpha=alpha, temperature=args.temperature)
    rows = []
    for seed in args.seeds:
        indices = select_positions(data.y_train * 0.0, args.fraction, "random", seed)
        run_cfg = base.model_copy(update={"seed": seed})
        plain = train(data, MODEL, run_cfg, indices=indices, progress=False).summary
        distilled = train(
            data, MODEL, run_cfg, indices=indices, teacher=teacher.model, kd=kd, progress=False
        ).summary
        rows.append(
            {
                "seed": seed,
                "plain_acc": plain["final_test_acc"],
                "kd_acc": distilled["final_test_acc"],
                "kd_alpha": distilled["kd"]["alpha"],
            }
        )
        print(rows[-1], flush=True)
    return {
        "teacher_acc": teacher.summary["final_test_acc"],
        "fraction": args.fraction,
        "epochs": args.epochs,
        "kd": {"alpha": args.alpha, "temperature": args.temperature},
        "runs": rows,
        "mean_plain_acc": statistics.mean(r["plain_acc"] for r in rows),
        "mean_kd_acc": statistics.mean(r["kd_acc"] for r in rows),
    }


def rs2_vs_static(args: argparse.Namespace) -> dict[str, Any]:
    data = load_dataset("mnist1d", DATASET)
    base = TrainConfig(steps=args.steps, eval_every=0, targets=[0.9])
    rows = []
    for seed in args.seeds:
        run_cfg = base.model_copy(update={"seed": seed})
        indices = select_positions(data.y_train * 0.0, args.fraction, "random", seed)
        static = train(data, MODEL, run_cfg, indices=indices, progress=False).summary
        rs2_cfg = run_cfg.model_copy(
            update={"data": DataConfig(mode="rs2", fraction=args.fraction)}
        )
        rs2 = train(data, MODEL, rs2_cfg, progress=False).summary
        assert static["steps"] == rs2["steps"] == args.steps
        rows.append(
            {
                "seed": seed,
                "static_acc": static["final_test_acc"],
                "rs2_acc": rs2["final_test_acc"],
                "static_train_seconds": static["train_seconds"],
                "rs2_train_seconds": rs2["train_seconds"],
            }
        )
        print(rows[-1], flush=True)
    return {
        "fraction": args.fraction,
        "steps": args.steps,
        "runs": rows,
        "mean_static_acc": statistics.mean(r["static_acc"] for r in rows),
        "mean_rs2_acc": statistics.mean(r["rs2_acc"] for r in rows),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["kd", "rs2"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fraction", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=60, help="kd: epochs of every run")
    parser.add_argument("--steps", type=int, default=600, help="rs2: steps of both runs")
    parser.add_argument("--alpha", default="auto", help="kd: a weight in [0, 1] or auto")
    parser.add_argument("--temperature", type=float, default=4.0)
    args = parser.parse_args(argv)
    if args.which == "kd":
        args.fraction = args.fraction or 0.3
        result = kd_vs_plain(args)
    else:
        args.fraction = args.fraction or 0.1
        result = rs2_vs_static(args)
    result = {
        **provenance(__file__, argv),
        "dataset": f"mnist1d{DATASET}",
        "model": "convnet1d(channels=32)",
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print({k: v for k, v in result.items() if k.startswith("mean")})


if __name__ == "__main__":
    main()
