"""Probe: does clipping the gradient norm train the lr-0.1 KD students the warm-up leaves diverging?

With ``train.clip_grad_norm`` (the step rescales the gradients to at most ``--max-norm``
in total L2 norm before ``optimizer.step()``; off when this probe was run, 5 by default
since) it trains the cells
bench/kd_stability.py found still collapsing
at lr 0.1 with the default warm-up (MNIST-1D 20k, RS2 50% + KD and InfoBatch + KD; the
study's recipe, teachers trained the same way, unclipped: kd_stability's "warmup"
defaults, the warm-up alone, so that it reruns as recorded). Cross-entropy runs' gradient
norms stay under 5 in their first epoch (kd_stability.json's diagnosis), KD's reach 22-36.

    python bench/kd_clip_probe.py --out bench/results/kd_clip_probe.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from kd_stability import base_config, collapsed, kd_student, train_teachers
from provenance import provenance

from datapruning._io import write_json
from datapruning._sections import derive
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
    parser.add_argument("--max-norm", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    data = load_dataset("mnist1d", DATASET)
    runs: list[dict[str, Any]] = []
    record: dict[str, Any] = {
        **provenance(__file__, argv),
        "lr": args.lr,
        "max_norm": args.max_norm,
        "warmup_epochs": "auto (the default)",
        "runs": runs,
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        teachers = train_teachers(data, args.lr, args.seeds, tmp, "warmup")
        for cell, data_cfg in CELLS.items():
            for seed in args.seeds:
                cfg = derive(
                    base_config(args.lr, "warmup", seed),
                    data=data_cfg,
                    clip_grad_norm=args.max_norm,
                )
                student = kd_student(data, cfg, teachers[seed], tmp / f"{cell}-{seed}")
                student.pop("warmup_steps")  # the default's: the same in every run here
                run = {"cell": cell, "seed": seed, **student}
                run["collapsed"] = collapsed(run, data.num_classes)
                runs.append(run)
                print(run, flush=True)
                write_json(args.out, record)
    record["collapsed"] = {
        cell: sum(r["collapsed"] for r in runs if r["cell"] == cell) for cell in CELLS
    }
    write_json(args.out, record)
    print(record["collapsed"])


if __name__ == "__main__":
    main()
