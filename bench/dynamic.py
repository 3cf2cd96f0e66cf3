"""Dynamic data pruning against full data at the same epochs: InfoBatch, online selection, RS2.

The acceptance of issue 15: on generated MNIST-1D with a large test split
(default 50,000 samples split 80/20: 40,000 train / 10,000 test, so one point
of accuracy is 100 test examples), for each seed, with KD from one full-data
teacher and without KD (``--kd both``, the default; ``on`` or ``off`` for one):

- ``full``: every example every epoch;
- ``infobatch``: ``train.data: {mode: infobatch, prune, anneal}``, by default
  the paper's setting (Qin et al. 2024: ratio 0.5, delta 0.875, i.e. pruning
  stops for the last 12.5% of the epochs: prune 0.5, anneal 0.125). Its LR
  schedule is theirs too: their CIFAR example rebuilds OneCycleLR every epoch
  with that epoch's pruned length L and puts it at step e * L, so after k
  steps of epoch e it reads the schedule at (e + k / L) / epochs, the position
  DynamicStepPlan reads the cosine at (it ends at zero on the last step);
- ``online``: ``train.data: {mode: online, keep}`` (the student scores
  candidate batches of ``batch_size / keep`` and trains on the top-loss share);
- ``online_proxy``: the same with ``proxy: convnet1d(--proxy-channels)``
  scoring the candidates and training alongside on the kept share of every
  ``--proxy-every``-th batch (default 4, as airbench96_faster's proxy)
  (:class:`~datapruning.train.dynamic.ProxySelection`; its whole cost is in
  the training clock and in ``cost.selection_seconds``);
- ``rs2``: RS2 without replacement at the fraction InfoBatch of the same seed
  and KD setting actually trained on (its ``cost.backward_fraction``): the
  same number of examples backpropagated, drawn at random instead of by loss.

It records each run's final test accuracy, training seconds (the loop's
clock: training only, evaluation excluded), the process CPU seconds of the
whole ``train`` call (teacher logits and the final evaluation included, the
same for every recipe: on this shared machine wall time swings with other
jobs, CPU time much less), steps and summary.json's cost block, then per
recipe (``infobatch+kd``, ``infobatch``, ...) the mean accuracy with a 95%
Student-t interval over the seeds and the mean training seconds relative to
full data with the same KD setting. ``goal`` says, per KD setting, whether
InfoBatch's mean accuracy lies inside full data's interval at >= 30% less
training time. The teacher's cost is common to all recipes and reported
apart. Runs go one after another on one thread each (the load average before
each run is recorded).

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

RECIPES = ("full", "infobatch", "online", "online_proxy", "rs2")
KD_SETTINGS = {"both": (True, False), "on": (True,), "off": (False,)}


def label(recipe: str, kd: bool) -> str:
    return f"{recipe}+kd" if kd else recipe


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
    parser.add_argument("--kd", choices=tuple(KD_SETTINGS), default="both")
    parser.add_argument("--proxy-channels", type=int, default=4, help="online_proxy's convnet1d")
    # airbench96_faster's proxy backpropagates every 4th batch and only scores the rest.
    parser.add_argument("--proxy-every", type=int, default=4, help="online_proxy learns every N")
    args = parser.parse_args(argv)
    kd_settings = KD_SETTINGS[args.kd]

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
    teacher = None
    if True in kd_settings:
        teacher = train(data, model, base.model_copy(update={"seed": 1000}), progress=False)
        print(f"teacher: {teacher.summary['final_test_acc']:.4f}", flush=True)
    proxy = ModelConfig(name="convnet1d", params={"channels": args.proxy_channels})

    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        for with_kd in kd_settings:
            infobatch_fraction = None
            for recipe in RECIPES:
                if recipe == "full":
                    spec = DataConfig()
                elif recipe == "infobatch":
                    spec = DataConfig(mode="infobatch", prune=args.prune, anneal=args.anneal)
                elif recipe == "online":
                    spec = DataConfig(mode="online", keep=args.keep)
                elif recipe == "online_proxy":
                    spec = DataConfig(
                        mode="online", keep=args.keep, proxy=proxy, proxy_every=args.proxy_every
                    )
                else:
                    assert infobatch_fraction is not None
                    spec = DataConfig(mode="rs2", fraction=infobatch_fraction)
                load = os.getloadavg()[0]
                cpu = time.process_time()
                result = train(
                    data,
                    model,
                    base.model_copy(update={"seed": seed, "data": spec}),
                    teacher=teacher.model if with_kd and teacher is not None else None,
                    kd=kd if with_kd else None,
                    progress=False,
                )
                cpu = time.process_time() - cpu
                summary = result.summary
                if recipe == "infobatch":
                    infobatch_fraction = summary["cost"]["backward_fraction"]
                run = {
                    "recipe": recipe,
                    "kd": with_kd,
                    "label": label(recipe, with_kd),
                    "seed": seed,
                    "data": spec.model_dump(mode="json", exclude_none=True),
                    "final_test_acc": summary["final_test_acc"],
                    "train_seconds": summary["train_seconds"],
                    "cpu_seconds": cpu,
                    "steps": summary["steps"],
                    "cost": summary["cost"],
                    "load_average_before": round(load, 2),
                }
                runs.append(run)
                print(
                    f"{run['label']:16s} seed {seed}: acc {run['final_test_acc']:.4f}  "
                    f"{run['train_seconds']:.1f} s (cpu {cpu:.1f} s)  "
                    f"backward {summary['cost']['backward_fraction']:.3f}",
                    flush=True,
                )

    labels = [label(recipe, with_kd) for with_kd in kd_settings for recipe in RECIPES]
    recipes = {name: _aggregate([r for r in runs if r["label"] == name]) for name in labels}
    goal: dict[str, Any] = {
        "statement": "InfoBatch mean accuracy inside full data's 95% interval "
        "at >= 30% less training time (full data with the same KD setting)",
    }
    for with_kd in kd_settings:
        full = recipes[label("full", with_kd)]
        for name in (label(recipe, with_kd) for recipe in RECIPES):
            figures = recipes[name]
            figures["train_seconds_vs_full"] = (
                figures["train_seconds_mean"] / full["train_seconds_mean"]
            )
            figures["cpu_seconds_vs_full"] = figures["cpu_seconds_mean"] / full["cpu_seconds_mean"]
        infobatch = recipes[label("infobatch", with_kd)]
        inside = bool(full["acc_ci95"][0] <= infobatch["acc_mean"] <= full["acc_ci95"][1])
        saved = 1 - infobatch["train_seconds_vs_full"]
        goal["kd" if with_kd else "no_kd"] = {
            "infobatch_acc_inside_full_interval": inside,
            "infobatch_time_saved": saved,
            "met": bool(inside and saved >= 0.3),
        }
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
            "kd_settings": list(kd_settings),
            "prune": args.prune,
            "anneal": args.anneal,
            "keep": args.keep,
            "proxy": f"convnet1d(channels={args.proxy_channels})",
            "proxy_every": args.proxy_every,
        },
        "teacher": None
        if teacher is None
        else {
            "final_test_acc": teacher.summary["final_test_acc"],
            "train_seconds": teacher.summary["train_seconds"],
        },
        "seeds": args.seeds,
        "runs": runs,
        "recipes": recipes,
        "goal": goal,
        "wall_seconds": time.perf_counter() - started,
        "load_average_at_end": list(os.getloadavg()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print(json.dumps({k: recipes[k]["acc_mean"] for k in labels}), json.dumps(goal))
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
        "cpu_seconds_mean": statistics.mean(r["cpu_seconds"] for r in runs),
        "backward_fraction_mean": statistics.mean(r["cost"]["backward_fraction"] for r in runs),
        "forward_fraction_mean": statistics.mean(r["cost"]["forward_fraction"] for r in runs),
        "selection_seconds_mean": statistics.mean(r["cost"]["selection_seconds"] for r in runs),
    }


if __name__ == "__main__":
    main()
