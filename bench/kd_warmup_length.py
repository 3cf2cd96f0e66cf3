"""At lr 0.1, is a longer LR warm-up enough for the KD students the default one leaves diverging?

bench/kd_stability.py found the default warm-up (one epoch of the run's steps, at most a
tenth of them) trains every KD student at lr 0.05, but at lr 0.1 RS2 50% + KD and
InfoBatch + KD on MNIST-1D 20k still collapse (NaN or chance) once the LR reaches its
peak. This trains those cells (the study's recipe: 30 epochs, SGD Nesterov 0.9, batch
100, KD alpha 0.5 T 4 from the full-data run of the same seed and lr) at lr 0.1 with
longer warm-ups and records each student's final accuracy and how it ended. Teachers
and students do not clip their gradients (kd_stability's "warmup" defaults), as when it
was run, before ``train.clip_grad_norm`` defaulted to 5.

    python bench/kd_warmup_length.py --out bench/results/kd_warmup_length.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from kd_stability import base_config, collapsed, kd_student, train_teachers
from provenance import provenance

from datapruning._io import write_json
from datapruning.config import DataConfig
from datapruning.data.sources import load_dataset

DATASET = {"num_samples": 25000, "seed": 42}
CELLS = {
    "rs2 50%": DataConfig(mode="rs2", fraction=0.5),
    "infobatch": DataConfig(mode="infobatch"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--warmups", nargs="+", default=["auto", "3", "5"])
    args = parser.parse_args(argv)
    data = load_dataset("mnist1d", DATASET)
    runs: list[dict[str, Any]] = []
    record: dict[str, Any] = {**provenance(__file__, argv), "lr": args.lr, "runs": runs}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        teachers = train_teachers(data, args.lr, args.seeds, tmp, "warmup")
        for cell, data_cfg in CELLS.items():
            for warmup in args.warmups:
                for seed in args.seeds:
                    cfg = base_config(args.lr, "warmup", seed).model_copy(
                        update={
                            "data": data_cfg,
                            "warmup_epochs": warmup if warmup == "auto" else float(warmup),
                        }
                    )
                    run_dir = tmp / f"{cell}-{warmup}-{seed}"
                    run = {
                        "cell": cell,
                        "warmup_epochs": warmup,
                        "seed": seed,
                        **kd_student(data, cfg, teachers[seed], run_dir),
                    }
                    run["collapsed"] = collapsed(run, data.num_classes)
                    runs.append(run)
                    print(run, flush=True)
                    write_json(args.out, record)
    record["collapsed"] = {
        f"{cell}, warmup {w}": sum(
            r["collapsed"] for r in runs if r["cell"] == cell and r["warmup_epochs"] == w
        )
        for cell in CELLS
        for w in args.warmups
    }
    write_json(args.out, record)
    print(record["collapsed"])


if __name__ == "__main__":
    main()
