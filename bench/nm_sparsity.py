"""N:M one-shot vs from scratch (SR-STE) at 2:4 and 1:4 on MNIST-1D: ConvNet1D and a small ViT.

    python bench/nm_sparsity.py [--seeds 0 1] [--vit-seeds 0 1] [--cnn-epochs 15]
                                [--vit-epochs 5] [--jobs 2] [--results bench/results/nm_sparsity.json]

Recipes, at the same number of epochs and the same SGD settings:

- ``dense``: no sparsity (the reference);
- ``oneshot-N:M``: ``scope: nm``, dense training for the first half, the N:M
  mask fixed from the weights at the halfway step, fine-tuned under it
  (NVIDIA ASP's prune-once recipe in one run);
- ``dynamic-N:M``: ``mode: dynamic`` from step 0: the mask recomputed from
  the dense weights every step, SR-STE's λ = 2e-4 (Zhou et al. 2021);
- ``progressive-N:M``: the same with the pruned weights faded out linearly
  over the first half (MDGF-linear, Bambhaniya et al. 2024).

Each run trains with ``datapruning.train.loop.train``; accuracy is the final
test accuracy and sparsity is measured on the exported ``checkpoint.pt`` (the
fraction of exact zeros over the pruned layers and the groups of m holding
more than n non-zeros). Runs go to ``--jobs`` worker processes of one thread
each. The epoch counts keep the bench short: 946 s here with a load average of
~12 on the 2 shared cores (bench/results/nm_sparsity.json), an estimated 3-4
minutes on two idle ones (ConvNet1D 0.6 s and the ViT 3.5 s per epoch on one
idle thread, 28 runs). Both budgets stop well short of
convergence (the 60-epoch ConvNet1D reaches 92% dense in
bench/results/sparsity.json): the figures compare recipes at a small budget,
not final accuracies.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from datapruning._io import write_json
from datapruning.config import ModelConfig, SparsityConfig, TrainConfig, sparsity_config
from datapruning.data.sources import load_dataset
from datapruning.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from datapruning.train.loop import train
from datapruning.train.sparsity import nm_violations, sparsity_report

DATASET = ("mnist1d", {"num_samples": 5000, "seed": 42})  # 4000 train / 1000 test
MODELS = {
    "convnet1d": ModelConfig(name="convnet1d", params={"channels": 32}),
    "vit": ModelConfig(
        name="vit", params={"patch_size": 4, "dim": 64, "depth": 2, "heads": 4, "mlp_ratio": 2.0}
    ),
}


def recipes() -> dict[str, SparsityConfig]:
    out = {"dense": sparsity_config()}
    for n, m in ((2, 4), (1, 4)):
        out[f"oneshot-{n}:{m}"] = sparsity_config(scope="nm", n=n, m=m, start=0.5)
        out[f"dynamic-{n}:{m}"] = sparsity_config(scope="nm", n=n, m=m, mode="dynamic", start=0)
        out[f"progressive-{n}:{m}"] = sparsity_config(
            scope="nm", n=n, m=m, mode="dynamic", start=0, end=0.5, progressive=True
        )
    return out


def run_one(
    model: str, sparsity: SparsityConfig, seed: int, epochs: int, out: Path
) -> dict[str, Any]:
    data = load_dataset(*DATASET)
    cfg = TrainConfig(
        epochs=epochs, batch_size=100, lr=0.05, seed=seed, eval_every=0, threads=1,
        sparsity=sparsity,
    )  # fmt: skip
    started = time.perf_counter()
    result = train(data, MODELS[model], cfg, run_dir=out, progress=False)
    figures: dict[str, Any] = {
        "test_acc": result.summary["final_test_acc"],
        "seconds": time.perf_counter() - started,
    }
    if result.summary["sparsity"] is not None:
        # Measured on the exported weights, not the pruner's bookkeeping.
        state = load_checkpoint(out / CHECKPOINT_NAME)["state_dict"]
        names = list(result.summary["sparsity"]["layers"])
        figures["sparsity"] = sparsity_report(state, names)["sparsity"]
        figures["nm_groups_over_limit"] = sum(
            nm_violations(state[name], sparsity.n, sparsity.m) for name in names
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--vit-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--cnn-epochs", type=int, default=15)
    parser.add_argument("--vit-epochs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(__file__).resolve().parent / "results/nm_sparsity.json",
    )
    args = parser.parse_args()
    plan = {
        "convnet1d": (args.seeds, args.cnn_epochs),
        "vit": (args.vit_seeds, args.vit_epochs),
    }
    started = time.perf_counter()
    results: dict[str, Any] = {}
    rows = []
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory() as tmp,
        concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=spawn) as pool,
    ):
        jobs = {
            (model, recipe, seed): pool.submit(
                run_one,
                model,
                sparsity,
                seed,
                epochs,
                Path(tmp) / f"{model}-{recipe}-{seed}".replace(":", "-"),
            )
            for model, (seeds, epochs) in plan.items()
            for recipe, sparsity in recipes().items()
            for seed in seeds
        }
        for model, (seeds, epochs) in plan.items():
            results[model] = {"epochs": epochs, "seeds": seeds, "recipes": {}}
            for recipe, sparsity in recipes().items():
                runs = [jobs[model, recipe, seed].result() for seed in seeds]
                accs = [r["test_acc"] for r in runs]
                summary: dict[str, Any] = {
                    "config": sparsity.model_dump(mode="json", exclude_defaults=True),
                    "test_acc": accs,
                    "mean_test_acc": statistics.mean(accs),
                    "std_test_acc": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "seconds": [r["seconds"] for r in runs],
                }
                if "sparsity" in runs[0]:
                    summary["sparsity"] = [r["sparsity"] for r in runs]
                    summary["nm_groups_over_limit"] = sum(r["nm_groups_over_limit"] for r in runs)
                results[model]["recipes"][recipe] = summary
                rows.append((model, recipe, summary))
                print(f"{model} {recipe}: {summary['mean_test_acc']:.1%} {accs}", flush=True)
    print("| model | recipe | mean test acc | per seed | sparsity | groups > n |")
    print("|---|---|---|---|---|---|")
    for model, recipe, s in rows:
        sparsity = f"{statistics.mean(s['sparsity']):.3%}" if "sparsity" in s else "-"
        print(
            f"| {model} | {recipe} | {s['mean_test_acc']:.1%} | "
            f"{', '.join(f'{a:.1%}' for a in s['test_acc'])} | {sparsity} | "
            f"{s.get('nm_groups_over_limit', '-')} |"
        )
    write_json(
        args.results,
        {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {
                "cpus": os.cpu_count(),
                "jobs": args.jobs,
                "threads_per_job": 1,
                "load_average_at_end": os.getloadavg(),
                "processor": platform.processor() or platform.machine(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
            "dataset": {"name": DATASET[0], **DATASET[1]},
            "models": {k: v.model_dump(mode="json") for k, v in MODELS.items()},
            "train": {"batch_size": 100, "lr": 0.05, "optimizer": "sgd (loop defaults)"},
            "total_seconds": time.perf_counter() - started,
            "results": results,
        },
    )
    print(f"wrote {args.results} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
