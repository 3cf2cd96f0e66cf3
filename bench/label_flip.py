"""EL2N on MNIST-1D with flipped labels: how well do the scores find them?

Flips ``--flip`` of the training labels to another class (seeded), writes the
noisy set as an .npz (read through the ``npz`` source, like a user's file),
scores it with EL2N and reports the AUROC of the scores for "was flipped" and
the share of flipped examples among the hardest ``--flip`` fraction.

    .venv/bin/python bench/label_flip.py    # writes bench/results/label_flip.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "label_flip.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flip", type=float, default=0.1, help="fraction of labels flipped")
    parser.add_argument("--seeds", type=int, default=4, help="EL2N scoring models")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per scoring model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the flips")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from datapruning._io import write_json
    from datapruning.config import ScoringConfig
    from datapruning.data.sources import load_dataset
    from datapruning.scoring import score

    clean = load_dataset("mnist1d")
    rng = np.random.default_rng(args.seed)
    n = clean.num_train
    flipped = rng.choice(n, size=round(args.flip * n), replace=False)
    labels = clean.y_train.copy()
    # A random *other* class for each flipped example.
    labels[flipped] = (labels[flipped] + rng.integers(1, clean.num_classes, len(flipped))) % 10
    is_flipped = np.zeros(n, dtype=bool)
    is_flipped[flipped] = True
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "noisy.npz"
        np.savez(path, x=clean.x_train, y=labels, x_test=clean.x_test, y_test=clean.y_test)
        noisy = load_dataset(f"npz:{path}")
        start = time.perf_counter()
        scores = score(noisy, "el2n", ScoringConfig(seeds=args.seeds, epochs=args.epochs))
        seconds = time.perf_counter() - start
    hardest = scores.select(args.flip, "hard")
    from provenance import provenance

    result = {
        **provenance(__file__, argv, packages=("scikit-learn",)),
        "dataset": f"mnist1d train split with {len(flipped)} of {n} labels flipped (seed {args.seed})",
        "el2n": {"seeds": args.seeds, "epochs": args.epochs, "seconds": seconds},
        "auroc": float(roc_auc_score(is_flipped, scores.values)),
        "flipped_share_of_hardest": float(is_flipped[hardest].mean()),
    }
    write_json(args.out, result)
    print(result, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
