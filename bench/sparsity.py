"""Sparsity acceptance on MNIST-1D: dense vs GMP to 90% global vs 2:4, measured on checkpoint.pt.

    python bench/sparsity.py [--config configs/sparse.yaml] [--seeds 0 1 2] [--out runs/bench-sparsity]
                             [--results bench/results/sparsity.json]

Trains each recipe with ``datapruning.train.loop.train`` (the config's dataset,
model and train sections), then reloads the exported ``checkpoint.pt`` of each
run and measures there: the fraction of exact zeros over the pruned layers (and
per layer), and for 2:4 the number of groups of 4 holding more than 2
non-zeros. Prints a markdown table with the mean over seeds and writes every
figure to ``--results`` (JSON).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from provenance import provenance

from datapruning._io import write_json
from datapruning.config import load_config
from datapruning.data.sources import load_dataset
from datapruning.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from datapruning.train.loop import train
from datapruning.train.sparsity import nm_violations, sparsity_report

RECIPES = {
    "dense": ["train.sparsity.target=0"],
    "gmp-90-global": ["train.sparsity.target=0.9", "train.sparsity.scope=global"],
    "2:4": ["train.sparsity={scope: nm, start: 0.1}"],  # one-shot N:M takes no target
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/sparse.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-sparsity"))
    parser.add_argument(
        "--results", type=Path, default=Path(__file__).resolve().parent / "results/sparsity.json"
    )
    args = parser.parse_args(argv)

    rows = []
    figures: dict[str, Any] = {}
    for recipe, overrides in RECIPES.items():
        accs, sparsities, layer_min, layer_max, violations = [], [], [], [], 0
        for seed in args.seeds:
            cfg = load_config(args.config, [*overrides, f"train.seed={seed}"])
            data = load_dataset(cfg.dataset.name, cfg.dataset.params)
            run_dir = args.out / f"{recipe.replace(':', '-')}-seed{seed}"
            result = train(data, cfg.model, cfg.train, run_dir=run_dir, progress=False)
            accs.append(result.summary["final_test_acc"])
            if result.summary["sparsity"] is None:
                continue
            # Measure on the exported weights, not the pruner's own bookkeeping.
            state = load_checkpoint(run_dir / CHECKPOINT_NAME)["state_dict"]
            names = list(result.summary["sparsity"]["layers"])
            report = sparsity_report(state, names)
            sparsities.append(report["sparsity"])
            per_layer = [layer["sparsity"] for layer in report["layers"].values()]
            layer_min.append(min(per_layer))
            layer_max.append(max(per_layer))
            if cfg.train.sparsity.scope == "nm":
                n, m = cfg.train.sparsity.n, cfg.train.sparsity.m
                violations += sum(nm_violations(state[name], n, m) for name in names)
        figures[recipe] = {
            "test_acc": accs,
            "mean_test_acc": statistics.mean(accs),
            "sparsity_of_pruned_layers": sparsities or None,
            "layer_sparsity_range": [min(layer_min), max(layer_max)] if sparsities else None,
            "nm_groups_over_limit": violations if recipe == "2:4" else None,
        }
        rows.append(
            (
                recipe,
                statistics.mean(accs),
                ", ".join(f"{a:.1%}" for a in accs),
                f"{statistics.mean(sparsities):.3%}" if sparsities else "-",
                f"{min(layer_min):.3%} - {max(layer_max):.3%}" if sparsities else "-",
                str(violations) if recipe == "2:4" else "-",
            )
        )
    print(f"config {args.config}, seeds {args.seeds}")
    print(
        "| recipe | mean test acc | per seed | sparsity (pruned layers) | per layer | 2:4 groups > 2 |"
    )
    print("|---|---|---|---|---|---|")
    for recipe, mean_acc, per_seed, sparsity, per_layer, bad in rows:
        print(f"| {recipe} | {mean_acc:.1%} | {per_seed} | {sparsity} | {per_layer} | {bad} |")
    write_json(
        args.results,
        {
            **provenance(__file__, argv),
            "config": args.config,
            "seeds": args.seeds,
            "recipes": figures,
        },
    )
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
