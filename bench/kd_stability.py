"""Do KD students train with the default LR warm-up and gradient clipping? A grid.

The study of docs/results.md (configs/study.yaml: SGD lr 0.05, Nesterov momentum 0.9,
batch 100, 30 epochs, KD alpha 0.5 at T 4 from the full-data run of the same seed) had
7 of 57 KD students at 20,000 MNIST-1D examples stay at chance from the first epoch.
This benchmark compares sets of ``DEFAULTS``: old (``train.warmup_epochs: 0``, no
``train.clip_grad_norm``), warmup (``auto``: one epoch of the run's own steps, at most a
tenth of them; no clipping) and new (TrainConfig's own: the warm-up and a clip to 5). It

1. **diagnoses** the first steps of a KD student against its cross-entropy twin (the
   study's full-short 50% cell, teacher and student seed 0): per step the loss, the
   gradient norm (before clipping), the largest |logit| and the logits' spread across
   the batch (a network whose output no longer depends on its input has spread ~0),
   under each set of defaults, at lr 0.05 and 0.1;
2. trains **KD students** on the study's recipes: random / EL2N-hard / EL2N-easy subsets,
   RS2 and full-short at 30% and 50%, InfoBatch and all data, 3 seeds, on MNIST-1D 4k and
   20k and digits, at lr 0.05 and (``--lr01``) at lr 0.1: with the new defaults every
   cell, with the others the study's collapsed cells and all data (``--old-grid all``:
   every cell). Teachers (the full-data runs) and EL2N scores (4 models x 10 epochs, as
   the study) are made with the same defaults as their students, so the full-data runs'
   accuracy old against new is also recorded (``--full-data-only``: only those, for
   more seeds).

``--carry FILE`` keeps an earlier results file's runs instead of repeating them
(``--carry-rename new=warmup`` relabels runs made when the new defaults were the warm-up
alone). A student **collapsed** when its final test accuracy is below twice chance, or
when the loop's divergence checks stopped it (``DataPruningError``). The JSON is rewritten
after every run, so an interrupted run leaves what it finished.

    python bench/kd_stability.py --out bench/results/kd_stability.json --defaults new old \
        --lr01 grid --carry bench/results/kd_stability_warmup.json --carry-rename new=warmup
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from provenance import provenance

from datapruning._io import write_json
from datapruning.config import DataConfig, KDConfig, ModelConfig, ScoringConfig, TrainConfig
from datapruning.data.sources import Dataset, load_dataset
from datapruning.errors import DataPruningError
from datapruning.scores import Scores, select_positions
from datapruning.scoring import score
from datapruning.train import step as train_step
from datapruning.train.loop import train

DATASETS = {
    "mnist1d-20k": ("mnist1d", {"num_samples": 25000, "seed": 42}),
    "mnist1d-4k": ("mnist1d", {"num_samples": 5000, "seed": 42}),
    "digits": ("digits", {}),
}
# The study's KD cells at 20k with a collapsed seed (docs/results.md, docs/study/report.md).
STUDY_COLLAPSED = [
    ("short", 0.3),
    ("short", 0.5),
    ("rs2", 0.5),
    ("infobatch", 1.0),
    ("easy", 0.5),
    ("easy", 0.3),
]
GRID = [
    *[(strategy, f) for strategy in ("random", "hard", "easy", "rs2", "short") for f in (0.3, 0.5)],
    ("infobatch", 1.0),
    ("full", 1.0),
]
# The train settings each set of defaults overrides (new: TrainConfig's own defaults).
DEFAULTS: dict[str, dict[str, Any]] = {
    "old": {"warmup_epochs": 0.0, "clip_grad_norm": None},  # before issue 23
    "warmup": {"warmup_epochs": "auto", "clip_grad_norm": None},  # issue 23's first default
    "new": {},
}
KD = KDConfig(alpha=0.5, temperature=4.0)
MODEL = ModelConfig()  # the dataset's default (the study's): convnet1d 32 / mlp


def base_config(lr: float, defaults: str, seed: int) -> TrainConfig:
    """The study's train section (configs/study.yaml) under one set of ``DEFAULTS``."""
    cfg = TrainConfig(
        epochs=30,
        batch_size=100,
        lr=lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        eval_every=1,
        targets=[0.9],
        threads=1,
        seed=seed,
    )
    return cfg.model_copy(update=DEFAULTS[defaults]) if DEFAULTS[defaults] else cfg


class _Trace:
    """Records the first ``limit`` steps of a run (loss, gradient norm, logit scale), then stops it."""

    class Done(Exception):
        pass

    def __init__(self, limit: int) -> None:
        self.limit, self.rows = limit, []
        self.original = train_step.TrainStep.__call__
        self.original_clip = torch.nn.utils.clip_grad_norm_
        self.before_clip: list[float] = []

    def __enter__(self) -> _Trace:
        trace, original, original_clip = self, self.original, self.original_clip

        def clip(*args: Any, **kwargs: Any) -> torch.Tensor:
            norm = original_clip(*args, **kwargs)  # the total norm before clipping
            trace.before_clip.append(float(norm))
            return norm

        def call(
            step: Any, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, n: int, weights=None
        ):
            lr = step.optimizer.param_groups[0]["lr"]
            trace.before_clip.clear()
            loss = original(step, x, y, index, n, weights)
            grads = [p.grad for p in step.model.parameters() if p.grad is not None]
            # The gradient's norm as computed (before train.clip_grad_norm rescales it).
            norm = trace.before_clip[0] if trace.before_clip else None
            norm = float(torch.sqrt(sum(g.pow(2).sum() for g in grads))) if norm is None else norm
            with torch.no_grad():
                step.model.eval()
                logits = step.model(x)
                step.model.train()
            trace.rows.append(
                {
                    "step": n,
                    "lr": lr,
                    "loss": float(loss),
                    "grad_norm": norm,
                    "max_abs_logit": float(logits.abs().max()),
                    "logit_spread": float(logits.std(0).mean()),
                }
            )
            if n >= trace.limit:
                raise _Trace.Done
            return loss

        train_step.TrainStep.__call__ = call  # type: ignore[method-assign]
        torch.nn.utils.clip_grad_norm_ = clip  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        train_step.TrainStep.__call__ = self.original  # type: ignore[method-assign]
        torch.nn.utils.clip_grad_norm_ = self.original_clip  # type: ignore[assignment]


def diagnose(
    data: Dataset, teachers: dict, tmp: Path, steps: int, defaults_run: list[str]
) -> list[dict[str, Any]]:
    """The first ``steps`` steps of the study's full-short 50% cell (seed 0), KD and CE."""
    spe = math.ceil(data.num_train / 100)
    out = []
    for lr in (0.05, 0.1):
        for defaults in defaults_run:
            for kd in (True, False):
                cfg = base_config(lr, defaults, 0)
                cfg = cfg.model_copy(update={"steps": round(0.5 * 30 * spe)})
                with _Trace(steps) as trace, contextlib.suppress(_Trace.Done):
                    train(
                        data,
                        MODEL,
                        cfg,
                        teacher=teachers[(lr, defaults, 0)][0] if kd else None,
                        kd=KD if kd else None,
                        run_dir=tmp / f"diag-{lr}-{defaults}-{kd}",
                        progress=False,
                    )
                entry = {"lr": lr, "defaults": defaults, "kd": kd, "trace": trace.rows}
                entry.update(trace_summary(trace.rows))
                out.append(entry)
                print({k: v for k, v in entry.items() if k != "trace"}, flush=True)
    return out


def trace_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the first steps show: gradient and logit scale, and collapse to a constant output.

    A collapse event: the logits' spread across the batch (mean over classes of their
    standard deviation) had risen above 0.5 and then falls below 0.01, i.e. the network's
    output stopped depending on its input (dead ReLUs); ``collapsed_steps`` counts the
    steps spent so.
    """
    risen, first, steps = False, None, 0
    for row in rows:
        risen = risen or row["logit_spread"] > 0.5
        if risen and row["logit_spread"] < 0.01:
            first = row["step"] if first is None else first
            steps += 1
    return {
        "first_step_grad_norm": rows[0]["grad_norm"],
        "max_grad_norm": max(r["grad_norm"] for r in rows),
        "max_abs_logit_by_step_20": max(r["max_abs_logit"] for r in rows[:20]),
        "first_collapse_step": first,
        "collapsed_steps": steps,
        "mean_loss_last_20_steps": float(np.mean([r["loss"] for r in rows[-20:]])),
    }


def resummarise(path: Path, command: str) -> None:
    """Recompute the derived fields of a results file from its runs and traces (no training)."""
    record = json.loads(path.read_text())
    if command not in record.setdefault("commands", []):
        record["commands"].append(command)
    if "diagnosis" in record:
        record["diagnosis"]["runs"] = [
            {key: run[key] for key in ("lr", "defaults", "kd", "trace")}
            | trace_summary(run["trace"])
            for run in record["diagnosis"]["runs"]
        ]
    record["summary"] = summarise(record)
    write_json(path, record)
    print(json.dumps(record["summary"], indent=1))


def student_config(
    strategy: str,
    fraction: float,
    cfg: TrainConfig,
    scores: Scores | None,
    num_train: int,
    seed: int,
) -> tuple[TrainConfig, np.ndarray | None]:
    """The study's recipe (datapruning.recipes) as a train config and training indices."""
    spe = math.ceil(num_train / cfg.batch_size)
    if strategy == "random":  # as datapruning.recipes draws it
        return cfg, select_positions(np.zeros(num_train), fraction, "random", seed)
    if strategy in ("hard", "easy"):
        assert scores is not None
        return cfg, scores.select(fraction, strategy, seed)
    if strategy == "rs2":
        return cfg.model_copy(update={"data": DataConfig(mode="rs2", fraction=fraction)}), None
    if strategy == "infobatch":
        return cfg.model_copy(update={"data": DataConfig(mode="infobatch")}), None
    if strategy == "short":  # all data for the fraction's share of the steps
        return cfg.model_copy(update={"steps": round(fraction * cfg.epochs * spe)}), None
    return cfg, None  # full


def collapsed(run: dict[str, Any], classes: int) -> bool:
    return run["stopped"] is not None or run["final_test_acc"] < 2.0 / classes


def train_teachers(
    data: Dataset, lr: float, seeds: list[int], folder: Path, defaults: str = "new"
) -> dict[int, Path]:
    """The full-data run of each seed at ``lr`` under ``defaults``: the KD teachers."""
    teachers = {}
    for seed in seeds:
        teachers[seed] = folder / f"teacher-{seed}"
        cfg = base_config(lr, defaults, seed)
        result = train(data, MODEL, cfg, run_dir=teachers[seed], progress=False)
        print(f"teacher {seed}: {result.summary['final_test_acc']:.4f}", flush=True)
    return teachers


def kd_student(data: Dataset, cfg: TrainConfig, teacher: Path, run_dir: Path) -> dict[str, Any]:
    """One KD student: its final accuracy and warm-up, or the loop's line if it stopped it."""
    stopped, summary = None, {}
    try:
        summary = train(
            data, MODEL, cfg, teacher=teacher, kd=KD, run_dir=run_dir, progress=False
        ).summary
    except DataPruningError as exc:
        stopped = str(exc)
    return {
        "final_test_acc": summary.get("final_test_acc", 0.0),
        "warmup_steps": summary.get("warmup_steps"),
        "stopped": stopped,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--diagnose-steps", type=int, default=200)
    parser.add_argument(
        "--defaults",
        nargs="+",
        default=["new", "old"],
        choices=list(DEFAULTS),
        help="the sets of defaults to train with (runs --carry holds are not repeated)",
    )
    parser.add_argument(
        "--old-grid",
        choices=["collapsed", "all"],
        default="collapsed",
        help="defaults other than new: only the study's collapsed cells (and full data), "
        "or every cell",
    )
    parser.add_argument(
        "--lr01",
        nargs="?",
        const="collapsed",
        choices=["collapsed", "grid"],
        help="also lr 0.1: the 20k collapsed cells and full data, or (grid) every cell of "
        "every dataset with the new defaults",
    )
    parser.add_argument(
        "--carry",
        type=Path,
        help="an earlier results file whose runs (students, teachers, diagnosis) to keep",
    )
    parser.add_argument(
        "--carry-rename",
        nargs="*",
        default=[],
        metavar="FROM=TO",
        help="relabel the carried runs' defaults (e.g. new=warmup: the file's new defaults "
        "were the warm-up alone)",
    )
    parser.add_argument(
        "--full-data-only",
        action="store_true",
        help="only the full-data runs (the teachers) of --seeds, for their accuracy",
    )
    parser.add_argument(
        "--resummarise", action="store_true", help="only recompute --out's derived fields"
    )
    args = parser.parse_args(argv)
    if args.resummarise:
        resummarise(args.out, provenance(__file__, argv)["command"])
        return

    record: dict[str, Any] = {
        **provenance(__file__, argv),
        "definition": {
            "collapsed": "final test accuracy below 2x chance, or stopped by the loop's "
            "divergence checks (check_finite / check_learning: DataPruningError)",
            "defaults": {
                "old": "train.warmup_epochs 0 (no warm-up), train.clip_grad_norm null "
                "(no clipping): before issue 23",
                "warmup": "train.warmup_epochs auto (one epoch of the run's steps, at most "
                "10%), no clipping: issue 23's first default",
                "new": "TrainConfig's defaults: "
                + json.dumps(
                    {k: getattr(TrainConfig(), k) for k in ("warmup_epochs", "clip_grad_norm")}
                ),
            },
            "study_collapsed_cells_20k": [f"{s} {f:.0%} + KD" for s, f in STUDY_COLLAPSED],
            "teacher": "the full-data run of the student's seed, same defaults and lr",
            "scores": "EL2N, 4 models x 10 epochs (the study's), same defaults and lr",
        },
        "train": base_config(0.05, "new", 0).model_dump(mode="json"),
        "kd": KD.model_dump(mode="json"),
        "teachers": [],
        "students": [],
    }
    done: set[tuple] = set()
    if args.carry:
        carried = json.loads(args.carry.read_text())
        rename = dict(pair.split("=", 1) for pair in args.carry_rename)
        record["carried"] = {
            "from": str(args.carry),
            "command": carried["command"],
            "date": carried["date"],
            "machine": carried["machine"],
            "versions": carried["versions"],
            "elapsed_seconds": carried.get("elapsed_seconds"),
            "renamed_defaults": rename,
        }
        for kind in ("teachers", "students"):
            for run in carried[kind]:
                run = {**run, "defaults": rename.get(run["defaults"], run["defaults"])}
                run["carried"] = True
                record[kind].append(run)
        if "diagnosis" in carried:
            record["diagnosis"] = carried["diagnosis"]
            for run in record["diagnosis"]["runs"]:
                run["defaults"] = rename.get(run["defaults"], run["defaults"])
                run["carried"] = True
        for t in record["teachers"]:
            done.add(("teacher", t["dataset"], t["lr"], t["defaults"], t["seed"]))
        for r in record["students"]:
            done.add((r["dataset"], r["lr"], r["defaults"], r["strategy"], r["kept"], r["seed"]))
    started = time.time()

    def save() -> None:
        record["elapsed_seconds"] = round(time.time() - started, 1)
        record["load_average_at_end"] = list(os.getloadavg())
        record["summary"] = summarise(record)
        write_json(args.out, record)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        teachers: dict[tuple, tuple[Path, float]] = {}
        score_cache: dict[tuple, Scores] = {}
        data_cache = {label: load_dataset(*DATASETS[label]) for label in args.datasets}

        def teacher(label: str, lr: float, defaults: str, seed: int) -> Path:
            key = (label, lr, defaults, seed)
            if key not in teachers:
                data = data_cache[label]
                run_dir = tmp / f"teacher-{label}-{lr}-{defaults}-{seed}"
                cfg = base_config(lr, defaults, seed)
                result = train(data, MODEL, cfg, run_dir=run_dir, progress=False)
                acc = result.summary["final_test_acc"]
                teachers[key] = (run_dir, acc)
                if ("teacher", *key) not in done:  # a carried teacher is recorded once
                    done.add(("teacher", *key))
                    record["teachers"].append(
                        {
                            "dataset": label,
                            "lr": lr,
                            "defaults": defaults,
                            "seed": seed,
                            "final_test_acc": acc,
                            "warmup_steps": result.summary["warmup_steps"],
                            "train_seconds": result.summary.get("train_seconds"),
                        }
                    )
                    print(record["teachers"][-1], flush=True)
                    save()
            return teachers[key][0]

        def scores_for(label: str, lr: float, defaults: str) -> Scores:
            key = (label, lr, defaults)
            if key not in score_cache:
                t0 = time.time()
                score_cache[key] = score(
                    data_cache[label],
                    "el2n",
                    ScoringConfig(metric="el2n", seeds=4, epochs=10, ensemble_size=2),
                    MODEL,
                    base_config(lr, defaults, 0),
                    progress=False,
                )
                print(f"scores {key}: {time.time() - t0:.1f} s", flush=True)
            return score_cache[key]

        def student(
            label: str, lr: float, defaults: str, strategy: str, fraction: float, seed: int
        ):
            if (label, lr, defaults, strategy, fraction, seed) in done:
                return  # carried
            done.add((label, lr, defaults, strategy, fraction, seed))
            data = data_cache[label]
            teacher_dir = teacher(label, lr, defaults, seed)
            scores = scores_for(label, lr, defaults) if strategy in ("hard", "easy") else None
            cfg, indices = student_config(
                strategy, fraction, base_config(lr, defaults, seed), scores, data.num_train, seed
            )
            run_dir = tmp / f"s-{label}-{lr}-{defaults}-{strategy}-{fraction}-{seed}"
            stopped = None
            try:
                result = train(
                    data, MODEL, cfg, indices=indices, teacher=teacher_dir, kd=KD,
                    run_dir=run_dir, progress=False,
                )  # fmt: skip
                summary = result.summary
            except DataPruningError as exc:
                stopped, summary = str(exc), {}
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            first = json.loads(lines[0]) if lines else {}
            last = json.loads(lines[-1]) if lines else {}
            run = {
                "dataset": label,
                "lr": lr,
                "defaults": defaults,
                "strategy": strategy,
                "kept": fraction,
                "seed": seed,
                "study_collapsed_cell": label == "mnist1d-20k"
                and (strategy, fraction) in STUDY_COLLAPSED,
                "final_test_acc": summary.get("final_test_acc", last.get("test_acc", 0.0)),
                "first_epoch_train_loss": first.get("train_loss"),
                "first_epoch_test_acc": first.get("test_acc"),
                "steps": summary.get("steps"),
                "warmup_steps": summary.get("warmup_steps"),
                "stopped": stopped,
            }
            run["collapsed"] = collapsed(run, data.num_classes)
            record["students"].append(run)
            print(run, flush=True)
            save()

        def grid(label: str, lr: float, defaults: str) -> None:
            everything = defaults == "new" or args.old_grid == "all"
            for strategy, fraction in GRID if everything else [("full", 1.0)]:
                for seed in args.seeds:
                    student(label, lr, defaults, strategy, fraction, seed)

        lrs = [0.05, 0.1] if args.lr01 else [0.05]
        if args.full_data_only:
            for label in args.datasets:
                for lr in lrs:
                    for seed in args.seeds:
                        for defaults in args.defaults:
                            teacher(label, lr, defaults, seed)
        elif "mnist1d-20k" in args.datasets:
            data = data_cache["mnist1d-20k"]
            # The study's collapsed cells first: at lr 0.1 (the harder), then 0.05.
            for lr in lrs[::-1]:
                for defaults in args.defaults:
                    cells = [*STUDY_COLLAPSED, ("full", 1.0)] if lr == 0.1 else STUDY_COLLAPSED
                    for strategy, fraction in cells:
                        for seed in args.seeds:
                            student("mnist1d-20k", lr, defaults, strategy, fraction, seed)
            if args.diagnose_steps:
                lookup = {
                    (lr, defaults, 0): (teacher("mnist1d-20k", lr, defaults, 0), 0.0)
                    for lr in (0.05, 0.1)
                    for defaults in args.defaults
                }
                runs = diagnose(data, lookup, tmp, args.diagnose_steps, args.defaults)
                record.setdefault("diagnosis", {}).update(
                    {
                        "cell": "mnist1d-20k full-short 50% (3,000 steps), teacher and "
                        "student seed 0",
                        "steps": args.diagnose_steps,
                    }
                )
                kept = [
                    r
                    for r in record["diagnosis"].get("runs", [])
                    if r["defaults"] not in args.defaults
                ]
                record["diagnosis"]["runs"] = kept + runs
                save()
        # The lr 0.05 grid on every dataset (the fast ones first), then every full-data run.
        for label in sorted(args.datasets, key=lambda label: label == "mnist1d-20k"):
            if args.full_data_only:
                break
            for defaults in args.defaults:
                grid(label, 0.05, defaults)
            for defaults in args.defaults:
                for seed in args.seeds:
                    if ("teacher", label, 0.05, defaults, seed) not in done:
                        teacher(label, 0.05, defaults, seed)
        if args.lr01 and not args.full_data_only:
            for label in sorted(args.datasets, key=lambda label: label == "mnist1d-20k"):
                if args.lr01 == "grid":
                    grid(label, 0.1, "new")
                for defaults in args.defaults:
                    for seed in args.seeds:
                        if ("teacher", label, 0.1, defaults, seed) not in done:
                            teacher(label, 0.1, defaults, seed)
    save()
    print(json.dumps(record["summary"], indent=1))
    print(f"wrote {args.out}")


def summarise(record: dict[str, Any]) -> dict[str, Any]:
    """Collapsed counts per (lr, defaults), the study's cells apart, and full-data accuracy."""
    out: dict[str, Any] = {"students": {}, "full_data_accuracy": {}}
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in record["students"]:
        groups.setdefault(f"lr {run['lr']:g}, {run['defaults']} defaults", []).append(run)
    for key, runs in groups.items():
        study = [r for r in runs if r["study_collapsed_cell"]]
        out["students"][key] = {
            "students": len(runs),
            "collapsed": sum(r["collapsed"] for r in runs),
            "stopped_by_divergence_checks": sum(r["stopped"] is not None for r in runs),
            "study_collapsed_cells_students": len(study),
            "study_collapsed_cells_collapsed": sum(r["collapsed"] for r in study),
            "collapsed_runs": [
                f"{r['dataset']} {r['strategy']} {r['kept']:.0%} seed {r['seed']}: "
                f"{r['final_test_acc']:.1%}"
                for r in runs
                if r["collapsed"]
            ],
        }
    accs: dict[str, dict[str, list[float]]] = {}
    for t in record["teachers"]:
        key = f"{t['dataset']} lr {t['lr']:g}"
        accs.setdefault(key, {}).setdefault(t["defaults"], []).append(t["final_test_acc"])
    for key, by in accs.items():
        out["full_data_accuracy"][key] = {
            defaults: {"seeds": len(a), "mean": float(np.mean(a)), "min": min(a), "max": max(a)}
            for defaults, a in by.items()
        }
    return out


if __name__ == "__main__":
    main()
