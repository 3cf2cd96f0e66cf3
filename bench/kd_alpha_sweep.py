"""The MNIST-1D sweep behind ``kd.alpha: auto``: kept fraction x alpha x seed.

A full-data 1D CNN (the quickstart's model and schedule) is the teacher; every
student trains on a random subset of the kept fraction with KD at each alpha
(alpha 0 is plain cross-entropy). Writes the per-run accuracies and the mean per
(fraction, alpha) as JSON.

    python bench/kd_alpha_sweep.py --out bench/results/kd_alpha_sweep.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
from pathlib import Path

from provenance import provenance

from datapruning._io import write_json
from datapruning.config import KDConfig, ModelConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.scores import select_positions
from datapruning.train.loop import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7])
    parser.add_argument(
        "--alphas",
        type=_alpha,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75, 0.9],
        help="weights in [0, 1], or auto (the rule of kd.alpha: auto)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument(
        "--previous", type=Path, nargs="*", default=[], help="earlier outputs to pool runs with"
    )
    args = parser.parse_args(argv)

    data = load_dataset("mnist1d", {"num_samples": 5000, "seed": 42})
    model = ModelConfig(name="convnet1d", params={"channels": 32})
    base = TrainConfig(epochs=args.epochs, eval_every=0, targets=[0.9])
    with tempfile.TemporaryDirectory() as tmp:
        teacher = train(data, model, base, run_dir=Path(tmp) / "teacher", progress=False)
        teacher_acc = teacher.summary["final_test_acc"]
        print(f"teacher: {teacher_acc:.3f}", flush=True)
        runs = []
        for fraction, alpha, seed in itertools.product(args.fractions, args.alphas, args.seeds):
            indices = select_positions(data.y_train * 0.0, fraction, "random", seed)
            result = train(
                data,
                model,
                base.model_copy(update={"seed": seed}),
                indices=indices,
                teacher=teacher.model if alpha != 0 else None,
                kd=KDConfig(alpha=alpha, temperature=args.temperature) if alpha != 0 else None,
                progress=False,
            )
            acc = result.summary["final_test_acc"]
            runs.append({"fraction": fraction, "alpha": alpha, "seed": seed, "test_acc": acc})
            print(f"f={fraction} alpha={alpha} seed={seed}: {acc:.3f}", flush=True)
    for previous in args.previous:
        earlier = json.loads(previous.read_text())
        if earlier["teacher_test_acc"] != teacher_acc or earlier["epochs"] != args.epochs:
            raise SystemExit(f"{previous} comes from another teacher or schedule")
        runs += earlier["runs"]
    fractions = sorted({r["fraction"] for r in runs})
    alphas = sorted({r["alpha"] for r in runs}, key=lambda a: (isinstance(a, str), str(a)))
    means = [
        {
            "fraction": fraction,
            "alpha": alpha,
            "mean_test_acc": statistics.mean(accs),
            "stdev": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "seeds": len(accs),
        }
        for fraction, alpha in itertools.product(fractions, alphas)
        if (
            accs := [
                r["test_acc"] for r in runs if (r["fraction"], r["alpha"]) == (fraction, alpha)
            ]
        )
    ]
    best = {
        fraction: max(
            (m for m in means if m["fraction"] == fraction), key=lambda m: m["mean_test_acc"]
        )
        for fraction in fractions
    }
    out = {
        **provenance(__file__, argv),
        "dataset": "mnist1d(num_samples=5000, seed=42)",
        "model": "convnet1d(channels=32)",
        "epochs": args.epochs,
        "temperature": args.temperature,
        "teacher_test_acc": teacher_acc,
        "runs": runs,
        "means": means,
        "best_alpha": {str(f): b["alpha"] for f, b in best.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print(json.dumps(out["best_alpha"]))


def _alpha(text: str) -> float | str:
    return text if text == "auto" else float(text)


if __name__ == "__main__":
    main()
