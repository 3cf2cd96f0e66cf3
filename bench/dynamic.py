"""Dynamic data pruning against full data at the same epochs: InfoBatch, online selection, RS2.

The acceptance of issue 15: on generated MNIST-1D with a large test split
(default 50,000 samples split 80/20: 40,000 train / 10,000 test, so one point
of accuracy is 100 test examples), for each seed train with KD from one
full-data teacher:

- ``full``: every example every epoch;
- ``infobatch``: ``train.data: {mode: infobatch, prune, anneal}``;
- ``online``: ``train.data: {mode: online, keep}`` (the student scores
  candidate batches of ``batch_size / keep`` and trains on the top-loss share);
- ``rs2``: RS2 without replacement at the fraction InfoBatch of the same seed
  actually trained on (its ``cost.backward_fraction``): the same number of
  examples backpropagated, drawn at random instead of by loss.

It records each run's final test accuracy, training seconds (the loop's
clock: training only, evaluation excluded), steps and summary.json's cost
block, then per recipe the mean accuracy with a 95% Student-t interval over
the seeds and the mean training seconds relative to full data. ``goal`` says
whether InfoBatch's mean accuracy lies inside full data's interval at >= 30%
less training time. The teacher's cost is common to all recipes and reported
apart. Runs go one after another on one thread each (timings on a shared
machine are noisy: the load average before each run is recorded).

    .venv/bin/python bench/dynamic.py --out bench/results/dynamic.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from provenance import provenance
from scipy import stats

from datapruning._io import write_json
from datapruning.config import DataConfig, KDConfig, ModelConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.train.loop import train

RECIPES = ("full", "infobatch", "online", "rs2")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=50_000, help="train + test (80/20)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--channels", type=int, default=16, help="convnet1d width")
    parser.add_argument("--batch-size", type=int, default=100)
    # Without a warm-up, KD (T = 4) from the 97.5% teacher diverged to chance in a first
    # attempt (full data, seed 0, 40k examples): the first steps' T^2 * KL gradients are large.
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    # At the loop's default lr 0.05 (with the warm-up) a second attempt still collapsed to
    # chance in some runs: online selection in both seeds run, InfoBatch seed 1 at 79.9%, full
    # data seed 1 at 92.5% (seed 0: 97.5%); a 10k-example probe collapsed InfoBatch at 0.05
    # and none at 0.02.
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--anneal", type=float, default=0.125)
    parser.add_argument("--keep", type=float, default=0.5, help="online selection's kept share")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    data = load_dataset("mnist1d", {"num_samples": args.samples, "seed": 42})
    generate_seconds = time.perf_counter() - started
    print(f"{data.describe()} (generated in {generate_seconds:.0f} s)", flush=True)
    model = ModelConfig(name="convnet1d", params={"channels": args.channels})
    base = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        warmup_epochs=args.warmup_epochs,
        lr=args.lr,
        eval_every=0,
        targets=[0.9],
        threads=1,
    )
    kd = KDConfig(alpha=args.alpha, temperature=args.temperature)
    teacher = train(data, model, base.model_copy(update={"seed": 1000}), progress=False)
    print(f"teacher: {teacher.summary['final_test_acc']:.4f}", flush=True)

    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        infobatch_fraction = None
        for recipe in RECIPES:
            if recipe == "full":
                spec = DataConfig()
            elif recipe == "infobatch":
                spec = DataConfig(mode="infobatch", prune=args.prune, anneal=args.anneal)
            elif recipe == "online":
                spec = DataConfig(mode="online", keep=args.keep)
            else:
                assert infobatch_fraction is not None
                spec = DataConfig(mode="rs2", fraction=infobatch_fraction)
            load = os.getloadavg()[0]
            result = train(
                data,
                model,
                base.model_copy(update={"seed": seed, "data": spec}),
                teacher=teacher.model,
                kd=kd,
                progress=False,
            )
            summary = result.summary
            if recipe == "infobatch":
                infobatch_fraction = summary["cost"]["backward_fraction"]
            run = {
                "recipe": recipe,
                "seed": seed,
                "data": spec.model_dump(mode="json", exclude_none=True),
                "final_test_acc": summary["final_test_acc"],
                "train_seconds": summary["train_seconds"],
                "steps": summary["steps"],
                "cost": summary["cost"],
                "load_average_before": round(load, 2),
            }
            runs.append(run)
            print(
                f"{recipe:9s} seed {seed}: acc {run['final_test_acc']:.4f}  "
                f"{run['train_seconds']:.1f} s  backward {summary['cost']['backward_fraction']:.3f}",
                flush=True,
            )

    recipes = {recipe: _aggregate([r for r in runs if r["recipe"] == recipe]) for recipe in RECIPES}
    full_seconds = recipes["full"]["train_seconds_mean"]
    for figures in recipes.values():
        figures["train_seconds_vs_full"] = figures["train_seconds_mean"] / full_seconds
    full, infobatch = recipes["full"], recipes["infobatch"]
    inside = bool(full["acc_ci95"][0] <= infobatch["acc_mean"] <= full["acc_ci95"][1])
    saved = 1 - infobatch["train_seconds_vs_full"]
    out = {
        **provenance(__file__, argv, packages=("mnist1d",)),
        "dataset": {
            "name": "mnist1d",
            "num_samples": args.samples,
            "num_train": data.num_train,
            "num_test": len(data.y_test),
            "generate_seconds": generate_seconds,
        },
        "model": f"convnet1d(channels={args.channels})",
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "threads": 1,
            "warmup_epochs": args.warmup_epochs,
            "lr": args.lr,
            "kd": {"alpha": args.alpha, "temperature": args.temperature},
        },
        "teacher": {
            "final_test_acc": teacher.summary["final_test_acc"],
            "train_seconds": teacher.summary["train_seconds"],
        },
        "seeds": args.seeds,
        "runs": runs,
        "recipes": recipes,
        "goal": {
            "statement": "InfoBatch mean accuracy inside full data's 95% interval "
            "at >= 30% less training time",
            "infobatch_acc_inside_full_interval": inside,
            "infobatch_time_saved": saved,
            "met": bool(inside and saved >= 0.3),
        },
        "wall_seconds": time.perf_counter() - started,
        "load_average_at_end": list(os.getloadavg()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print(json.dumps({k: recipes[k]["acc_mean"] for k in RECIPES}), json.dumps(out["goal"]))
    return out


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean accuracy with a 95% Student-t interval over the seeds; mean seconds and cost."""
    accs = [r["final_test_acc"] for r in runs]
    mean = statistics.mean(accs)
    half = 0.0
    if len(accs) > 1:
        t = float(stats.t.ppf(0.975, len(accs) - 1))
        half = t * statistics.stdev(accs) / math.sqrt(len(accs))
    return {
        "seeds": len(accs),
        "acc_mean": mean,
        "acc_ci95": [mean - half, mean + half],
        "train_seconds_mean": statistics.mean(r["train_seconds"] for r in runs),
        "backward_fraction_mean": statistics.mean(r["cost"]["backward_fraction"] for r in runs),
        "forward_fraction_mean": statistics.mean(r["cost"]["forward_fraction"] for r in runs),
        "selection_seconds_mean": statistics.mean(r["cost"]["selection_seconds"] for r in runs),
    }


if __name__ == "__main__":
    main()
