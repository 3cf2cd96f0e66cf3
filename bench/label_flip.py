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
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "label_flip.json"


def flip_labels(clean: Any, share: float, seed: int, folder: Path) -> tuple[Any, np.ndarray]:
    """``clean`` with ``share`` of its training labels flipped to another class (seeded),
    written as an .npz in ``folder`` and read back through the ``npz`` source, as a user's
    file would be; and which examples were flipped."""
    from datapruning.data.sources import load_dataset

    rng = np.random.default_rng(seed)
    n = clean.num_train
    flipped = rng.choice(n, size=round(share * n), replace=False)
    labels = clean.y_train.copy()
    # A random *other* class for each flipped example.
    labels[flipped] = (labels[flipped] + rng.integers(1, clean.num_classes, len(flipped))) % 10
    is_flipped = np.zeros(n, dtype=bool)
    is_flipped[flipped] = True
    path = folder / "noisy.npz"
    np.savez(path, x=clean.x_train, y=labels, x_test=clean.x_test, y_test=clean.y_test)
    return load_dataset(f"npz:{path}"), is_flipped


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
    with tempfile.TemporaryDirectory() as tmp:
        noisy, is_flipped = flip_labels(clean, args.flip, args.seed, Path(tmp))
        start = time.perf_counter()
        scores = score(noisy, "el2n", ScoringConfig(seeds=args.seeds, epochs=args.epochs))
        seconds = time.perf_counter() - start
    hardest = scores.select(args.flip, "hard")
    from provenance import provenance

    result = {
        **provenance(__file__, argv, packages=("scikit-learn",)),
        "dataset": f"mnist1d train split with {int(is_flipped.sum())} of {len(is_flipped)} "
        f"labels flipped (seed {args.seed})",
        "el2n": {"seeds": args.seeds, "epochs": args.epochs, "seconds": seconds},
        "auroc": float(roc_auc_score(is_flipped, scores.values)),
        "flipped_share_of_hardest": float(is_flipped[hardest].mean()),
    }
    write_json(args.out, result)
    print(result, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
