"""Do KD students diverge without an LR warm-up? The study's failure, reproduced and fixed.

In the study of docs/results.md (configs/study.yaml: lr 0.05, Nesterov momentum, no
warm-up, KD alpha 0.5 at temperature 4), 4 of the 20,000-example KD students of
teacher seed 0 that trained on all the data (full-short 30% and 50%, InfoBatch, RS2 50%)
stayed at chance from the first epoch while their twins of seeds 1 and 2 trained. This
trains that teacher and full-data KD students (the full-short 50% schedule: 15 of the
30 epochs) with and without a one-epoch linear warm-up, and records each student's
first-epoch loss and final accuracy.

    python bench/kd_warmup.py --out bench/results/kd_warmup.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

from provenance import provenance

from datapruning._io import write_json
from datapruning.config import KDConfig, ModelConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.train.loop import train

DATASET = {"num_samples": 25000, "seed": 42}  # the study's mnist1d-20k


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--warmups", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--teacher-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30, help="the teacher's (full data's)")
    parser.add_argument("--share", type=float, default=0.5, help="students' share of its steps")
    args = parser.parse_args(argv)

    data = load_dataset("mnist1d", DATASET)
    model = ModelConfig(name="convnet1d", params={"channels": 32})
    base = TrainConfig(epochs=args.epochs, targets=[0.9], threads=1)
    steps = round(args.share * args.epochs * -(-data.num_train // base.batch_size))
    kd = KDConfig(alpha=0.5, temperature=4.0)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        teacher = train(
            data,
            model,
            base.model_copy(update={"seed": args.teacher_seed}),
            run_dir=Path(tmp) / "teacher",
            progress=False,
        )
        teacher_acc = teacher.summary["final_test_acc"]
        print(f"teacher seed {args.teacher_seed}: {teacher_acc:.4f}", flush=True)
        for warmup, seed in itertools.product(args.warmups, args.seeds):
            cfg = base.model_copy(update={"seed": seed, "steps": steps, "warmup_epochs": warmup})
            result = train(
                data,
                model,
                cfg,
                teacher=teacher.model,
                kd=kd,
                run_dir=Path(tmp) / f"w{warmup:g}-s{seed}",
                progress=False,
            )
            curve = (Path(tmp) / f"w{warmup:g}-s{seed}" / "metrics.jsonl").read_text()
            first = curve.splitlines()[0]
            first_epoch = json.loads(first)
            run = {
                "warmup_epochs": warmup,
                "seed": seed,
                "first_epoch_train_loss": first_epoch["train_loss"],
                "first_epoch_test_acc": first_epoch["test_acc"],
                "final_test_acc": result.summary["final_test_acc"],
                "steps": result.summary["steps"],
            }
            runs.append(run)
            print(run, flush=True)
    write_json(
        args.out,
        {
            **provenance(__file__, argv),
            "dataset": {"name": "mnist1d", **DATASET, "num_train": data.num_train},
            "teacher_seed": args.teacher_seed,
            "teacher_test_acc": teacher_acc,
            "kd": kd.model_dump(mode="json"),
            "train": base.model_dump(mode="json"),
            "student_steps": steps,
            "runs": runs,
            "diverged": {
                f"warmup {w:g}": sum(
                    r["final_test_acc"] < 0.2 for r in runs if r["warmup_epochs"] == w
                )
                for w in args.warmups
            },
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
