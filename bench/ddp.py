"""One run on two processes (DDP, gloo on CPU) against one process: speed, accuracy, equality.

Three layouts of the same run, the same global batch and order:

- ``1x1``: one process, one thread (what a cell of a sweep runs);
- ``1x2``: one process, two threads (the alternative a user would pick on 2 cores);
- ``2x1``: two processes (``datapruning train --nproc 2``), one thread each.

For each, on MNIST-1D 20k (the 1-D CNN) and on 32x32 RGB images (ResNet-18 at width
16; scikit-learn's digits upscaled, written here as an npz: nothing is downloaded),
over seeds: examples per second of training (``cost.examples_trained /
train_seconds``, the slowest rank's clock), the wall-clock of the whole command
(process start, torchrun, data, evaluation), final test accuracy, and the scaling
efficiency (``2x1`` examples/s over twice ``1x1``'s, and over ``1x2``'s).

Equality: ``2x1`` against ``1x1`` after 50 steps (InfoBatch: 2 epochs, the second
pruned), plain CE, KD from cached logits, GMP and InfoBatch, on the MLP and the 1-D
CNN: the largest weight difference, beside the difference that floating-point
summation order alone makes (``1x1`` against ``1x2``: same run, other thread count).

    .venv/bin/python bench/ddp.py --out bench/results/ddp.json
    .venv/bin/python bench/ddp.py --out /tmp/ddp.json --quick   # a minute: 1 seed, short
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance

LAYOUTS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}  # processes, threads each


def _config(dataset: str, model: str, params: dict[str, Any], train: dict[str, Any]) -> str:
    return json.dumps(
        {
            "dataset": {"name": dataset, "params": params},
            "model": {"name": model, "params": train.pop("model_params", {})},
            "train": {"batch_size": 100, "lr": 0.05, "eval_every": 1, "targets": [0.9], **train},
        }
    )  # JSON is YAML


def _images(root: Path) -> Path:
    """scikit-learn's digits as 3x32x32 float images (nearest upscaling), in an npz."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    x = np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)  # 8x8 -> 32x32
    x = np.repeat(x[:, None], 3, axis=1)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    cut = 1400  # 1400 train (a multiple of the batch) / 397 test
    path = root / "digits32.npz"
    np.savez(path, x=x[:cut], y=y[:cut], x_test=x[cut:], y_test=y[cut:])
    return path


def _train(
    root: Path, config: str, out: str, layout: str, *args: str
) -> tuple[dict[str, Any], float]:
    """One ``datapruning train`` in ``layout``; its summary and the command's wall-clock."""
    processes, threads = LAYOUTS[layout]
    cfg = root / f"{out}.yaml"
    cfg.write_text(config)
    command = [sys.executable, "-m", "datapruning", "train", str(cfg), "--out", str(root / out)]
    command += ["--set", f"train.threads={threads}", *args]
    if processes > 1:
        command += ["--nproc", str(processes)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=root)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads((root / out / "summary.json").read_text()), wall


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=False)["state_dict"]


def _difference(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def throughput(root: Path, seeds: list[int], quick: bool) -> dict[str, Any]:
    """Examples/s, wall-clock and accuracy per layout, per dataset, over seeds."""
    images = _images(root)
    cases = {
        "mnist1d-20k convnet1d": _config(
            "mnist1d", "convnet1d", {"num_samples": 25000, "seed": 42},
            {"epochs": 2 if quick else 30},
        ),
        "digits 3x32x32 resnet18 width 16": _config(
            "npz", "resnet18", {"path": str(images)},
            {"epochs": 1 if quick else 5, "model_params": {"width": 16}},
        ),
    }  # fmt: skip
    results: dict[str, Any] = {}
    for name, config in cases.items():
        rows: dict[str, Any] = {}
        for layout in LAYOUTS:  # one run at a time: the machine has 2 cores
            runs = []
            for seed in seeds:
                out = f"{name.split()[0]}-{layout}-s{seed}"
                summary, wall = _train(root, config, out, layout, "--set", f"train.seed={seed}")
                examples = summary["cost"]["examples_trained"]
                runs.append(
                    {
                        "seed": seed,
                        "examples_per_second": examples / summary["train_seconds"],
                        "train_seconds": summary["train_seconds"],
                        "wall_seconds": wall,
                        "final_test_acc": summary["final_test_acc"],
                        "distributed": summary["distributed"],
                    }
                )
                print(f"{name} {layout} seed {seed}: {runs[-1]}", flush=True)
            rows[layout] = {
                "runs": runs,
                "examples_per_second_mean": statistics.mean(r["examples_per_second"] for r in runs),
                "final_test_acc_mean": statistics.mean(r["final_test_acc"] for r in runs),
                "final_test_acc_min": min(r["final_test_acc"] for r in runs),
                "final_test_acc_max": max(r["final_test_acc"] for r in runs),
            }
        speed = {k: v["examples_per_second_mean"] for k, v in rows.items()}
        rows["scaling"] = {
            "efficiency_vs_1x1": speed["2x1"] / (2 * speed["1x1"]),
            "speedup_vs_1x1": speed["2x1"] / speed["1x1"],
            "speedup_vs_1x2": speed["2x1"] / speed["1x2"],
            "threads_speedup_1x2_vs_1x1": speed["1x2"] / speed["1x1"],
        }
        results[name] = rows
    return results


def equality(root: Path) -> dict[str, Any]:
    """Largest weight difference, 2 ranks against 1 process, beside the threads' own."""
    recipes = {
        "ce": ["--set", "train.steps=50"],
        "kd": ["--set", "train.steps=50", "--teacher", str(root / "teacher-{model}")],
        "gmp": ["--set", "train.steps=50", "--set", "train.sparsity.target=0.8",
                "--set", "train.sparsity.end=0.5"],
        "infobatch": ["--set", "train.data.mode=infobatch"],
    }  # fmt: skip
    results: dict[str, Any] = {}
    for model in ("mlp", "convnet1d"):
        config = _config("mnist1d", model, {"num_samples": 5000, "seed": 42}, {"epochs": 2})
        _train(root, config, f"teacher-{model}", "1x1", "--set", "train.steps=50")
        for name, args in recipes.items():
            args = [a.replace("{model}", model) for a in args]
            runs = {layout: f"eq-{model}-{name}-{layout}" for layout in LAYOUTS}
            for layout, out in runs.items():
                _train(root, config, out, layout, *args)
            one = root / runs["1x1"]
            results[f"{model} {name}"] = {
                "two_ranks_vs_one_process": _difference(one, root / runs["2x1"]),
                "two_threads_vs_one_thread": _difference(one, root / runs["1x2"]),
            }
            print(f"{model} {name}: {results[f'{model} {name}']}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="1 seed, 1-2 epochs")
    parser.add_argument(
        "--sections", nargs="+", choices=["throughput", "equality"],
        default=["throughput", "equality"],
        help="what to (re)measure; the others already in --out are kept, each with the "
        "command, machine and load that measured it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    seeds = args.seeds[:1] if args.quick else args.seeds
    record: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    record.update(
        {
            "layouts": {k: {"processes": p, "threads": t} for k, (p, t) in LAYOUTS.items()},
            "backend": "gloo",
            "global_batch": 100,
        }
    )
    for section in args.sections:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            figures = (
                throughput(root, seeds, args.quick) if section == "throughput" else (equality(root))
            )
        record[section] = {
            **provenance(__file__, argv),
            "results": figures,
            "elapsed_seconds": round(time.perf_counter() - start, 1),
            "load_average_at_end": list(os.getloadavg()),
        }
    # The file's own record: this call's, and every section's command.
    record.update(provenance(__file__, argv))
    record["commands"] = [record[s]["command"] for s in ("throughput", "equality") if s in record]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
