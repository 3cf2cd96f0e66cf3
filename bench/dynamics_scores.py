"""Scores recorded by a training run against the separate scoring ensemble (issue 23 §4).

On MNIST-1D 20k (the study's experiment: 25,000 generated, 20,000 train), one
full-data run with the study's recipe (convnet1d, 30 epochs, SGD 0.05) records
its dynamics (``train.record``: forgetting, AUM, EL2N after several epochs) and
the ensemble scores EL2N and forgetting as ``datapruning score`` does (4 models,
10 epochs). Reported:

- Spearman of each recorded score against the ensemble's EL2N and forgetting,
  and the overlap (Jaccard) of their hardest 30%;
- with 10% of the training labels flipped (seeded, to another class): the AUROC
  of each score for "was flipped";
- what recording cost: the run's bookkeeping inside its training clock and the
  EL2N passes outside it, as a share of the run's training seconds, against the
  ensemble's scoring seconds.

    python bench/dynamics_scores.py    # writes bench/results/dynamics_scores.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "dynamics_scores.json"
DATASET = {"num_samples": 25000, "seed": 42}


def _hardest(values: np.ndarray, share: float) -> set[int]:
    return set(np.argsort(-values, kind="stable")[: round(share * len(values))].tolist())


def _compare(recorded: dict[str, np.ndarray], ensemble: dict[str, np.ndarray]) -> dict:
    from scipy.stats import spearmanr

    rows = {}
    for name, values in recorded.items():
        rows[name] = {}
        for reference, ref_values in ensemble.items():
            a, b = _hardest(values, 0.3), _hardest(ref_values, 0.3)
            rows[name][f"vs_ensemble_{reference}"] = {
                "spearman": float(spearmanr(values, ref_values).statistic),
                "hardest_30_jaccard": len(a & b) / len(a | b),
            }
    return rows


def _record(data: Any, args: argparse.Namespace, run_dir: Path) -> tuple[dict, dict]:
    """One full-data run recording its dynamics: its scores and its cost record."""
    from datapruning.config import ModelConfig, TrainConfig
    from datapruning.scores import Scores
    from datapruning.train.loop import train

    record = {"forgetting": True, "aum": True, "el2n_epochs": args.el2n_epochs}
    cfg = TrainConfig(epochs=args.epochs, lr=0.05, targets=[0.9], threads=1, record=record)
    result = train(data, ModelConfig(), cfg, run_dir=run_dir, progress=False)
    values = {
        metric: Scores.load(run_dir / f"scores-{metric}.parquet").values
        for metric in ("forgetting", "aum", "el2n")
    }
    summary = result.summary
    cost = {
        **summary["dynamics"],
        "train_seconds": summary["train_seconds"],
        "final_test_acc": summary["final_test_acc"],
    }
    return values, cost


def _ensemble(data: Any, args: argparse.Namespace) -> tuple[dict, float]:
    from datapruning.config import ScoringConfig
    from datapruning.scoring import score

    values, seconds = {}, 0.0
    for metric in ("el2n", "forgetting"):
        start = time.perf_counter()
        cfg = ScoringConfig(seeds=args.seeds, epochs=args.scoring_epochs, ensemble_threads=1)
        values[metric] = score(data, metric, cfg).values
        seconds += time.perf_counter() - start
    return values, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="the recording run's epochs")
    parser.add_argument("--el2n-epochs", type=int, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--seeds", type=int, default=4, help="ensemble scoring models")
    parser.add_argument("--scoring-epochs", type=int, default=10)
    parser.add_argument("--flip", type=float, default=0.1)
    parser.add_argument("--num-samples", type=int, default=DATASET["num_samples"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch
    from label_flip import flip_labels
    from provenance import provenance
    from sklearn.metrics import roc_auc_score

    from datapruning._io import write_json
    from datapruning.data.sources import load_dataset

    torch.set_num_threads(1)
    clean = load_dataset("mnist1d", {**DATASET, "num_samples": args.num_samples})
    result: dict[str, Any] = {
        **provenance(__file__, argv, packages=("scipy", "scikit-learn")),
        "dataset": f"mnist1d {clean.num_train} train",
        "recording_run": {"epochs": args.epochs, "el2n_epochs": args.el2n_epochs},
        "ensemble": {"seeds": args.seeds, "epochs": args.scoring_epochs},
    }
    with tempfile.TemporaryDirectory() as tmp:
        recorded, cost = _record(clean, args, Path(tmp) / "clean")
        ensemble, ensemble_seconds = _ensemble(clean, args)
        result["agreement"] = _compare(recorded, ensemble)
        result["cost"] = {
            **cost,
            "recording_share_of_train_seconds": cost["share_of_train_seconds"],
            "ensemble_scoring_seconds": ensemble_seconds,
        }
        print(f"cost: {result['cost']}", file=sys.stderr)
        # Label noise: flipped labels, found by which score?
        noisy, is_flipped = flip_labels(clean, args.flip, 0, Path(tmp))
        noisy_recorded, _ = _record(noisy, args, Path(tmp) / "noisy")
        noisy_ensemble, _ = _ensemble(noisy, args)
        result["label_noise"] = {
            "flipped": float(args.flip),
            "auroc": {
                **{
                    f"recorded_{k}": float(roc_auc_score(is_flipped, v))
                    for k, v in noisy_recorded.items()
                },
                **{
                    f"ensemble_{k}": float(roc_auc_score(is_flipped, v))
                    for k, v in noisy_ensemble.items()
                },
            },
        }
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
