"""Prototype scores at scale: `datapruning score --metric proto` on 100k, 200k and 1M MNIST-1D.

    .venv/bin/python bench/proto_scale.py                  # every phase -> bench/results/proto_scale.json
    .venv/bin/python bench/proto_scale.py --phases quality --student-seeds 0   # one phase, fewer seeds

Phases (each writes its own section of the JSON with its own command, and keeps
the other sections of an earlier run):

- ``generate``: each size's MNIST-1D set made by the project's ``mnist1d`` source
  (the package's generator, never a download) in its own process, into the
  bench's cache (``--cache``), timed apart from scoring;
- ``scale``: ``datapruning score --metric proto`` at each size in its own
  process (reading the generated set from that cache): wall time and peak RSS
  (``os.wait4``'s ``ru_maxrss``), and the growth of time and RSS per example
  between the smallest and largest size;
- ``budget``: at ``--quality-size`` examples, the scores of the old default (30
  encoder epochs over every example) against encoder budgets of ``--steps``
  steps: Spearman correlation with the old scores, and the old recipe with another
  seed as the noise floor (two runs of the same recipe agree no better than that);
- ``quality``: students (the dataset's default model, ``--student-epochs``) on the
  hardest and easiest 30% and 50% chosen by the old scores and by the new default,
  ``--student-seeds`` seeds each: mean test accuracy and the difference.
- ``before``: the same command with the old recipe (``encoder_epochs=30``) at
  ``--before-sizes``, for the cost the step budget replaced;
- ``assign``: the exact nearest-centroid search against faiss's HNSW index on
  random unit embeddings (``--assign-rows`` x 64) for several k: where the exact
  search becomes the bottleneck and how often HNSW finds the exact centroid.

Sizes are training examples: MNIST-1D's ``num_samples`` is 1.25x that (80/20 split).
Timed on a shared 2-core machine while other engineers ran tests: the JSON records the
load averages of each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from provenance import provenance

RESULTS = Path(__file__).resolve().parent / "results" / "proto_scale.json"
CACHE = Path(tempfile.gettempdir()) / "datapruning-proto-bench-cache"
GIB = 2**30
PHASES = ("generate", "scale", "before", "assign", "budget", "quality")
PYTHON = sys.executable
DATAPRUNING = str(Path(sys.executable).parent / "datapruning")


def num_samples(train: int) -> int:
    """MNIST-1D ``num_samples`` giving ``train`` training examples (80/20 split)."""
    return train * 5 // 4


def run_process(argv: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one process; its wall time and peak RSS (ru_maxrss of it and its children)."""
    print(f"[proto_scale] {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(list(argv), env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{argv[0]} failed with exit status {code}")
    rss = usage.ru_maxrss * 1024  # KiB on Linux
    return {
        "seconds": round(seconds, 2),
        "peak_rss_bytes": rss,
        "peak_rss_gib": round(rss / GIB, 3),
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


def environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "DATAPRUNING_CACHE_DIR": str(cache)}


def generate(sizes: Sequence[int], cache: Path) -> dict[str, Any]:
    records = {}
    for train in sizes:
        code = (
            "from datapruning.data.sources import load_dataset; "
            f"d = load_dataset('mnist1d', {{'num_samples': {num_samples(train)}}}); "
            "print(d.num_train)"
        )
        record = run_process([PYTHON, "-c", code], environment(cache))
        records[str(train)] = {"num_samples": num_samples(train), **record}
        print(f"[proto_scale] generate {train}: {record}", flush=True)
    return {"cache": str(cache), "sizes": records}


def score_cli(
    sizes: Sequence[int], cache: Path, threads: int | None, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """``datapruning score --metric proto`` at each size, each in its own process;
    ``extra``: more ``--set`` overrides (the old recipe's ``encoder_epochs=30``)."""
    records: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for train in sizes:
            out = Path(tmp) / f"proto-{train}.parquet"
            argv = [
                DATAPRUNING, "score", "--dataset", "mnist1d", "--metric", "proto",
                "--set", f"dataset.params.num_samples={num_samples(train)}", "--out", str(out),
            ]  # fmt: skip
            if threads:
                argv += ["--set", f"train.threads={threads}"]
            for override in extra:
                argv += ["--set", override]
            record = run_process(argv, environment(cache))
            from datapruning.scores import Scores

            metadata = Scores.load(out).metadata
            record |= {
                "num_train": metadata["dataset"]["num_train"],
                "scoring_seconds": round(metadata["seconds"], 2),
                "encoder": {
                    key: metadata["params"]["encoder"].get(key)
                    for key in ("budget", "steps", "examples_seen", "seconds")
                },
                "assignment": metadata["params"].get("assignment"),
            }
            records[str(train)] = record
            print(f"[proto_scale] score {train}: {json.dumps(record)}", flush=True)
    if extra:
        return {"sizes": records, "overrides": list(extra)}
    # Least-squares slopes over every size: wall time (noisy on a shared machine), the
    # part of scoring that grows with N (scoring less the encoder's fixed steps: the
    # embedding pass, the assignment, the sample's clustering) and peak RSS.
    n = np.array([records[str(train)]["num_train"] for train in sizes], dtype=np.float64)
    for record in records.values():
        record["per_example_seconds"] = round(
            record["scoring_seconds"] - record["encoder"]["seconds"], 3
        )

    def slope(key: str) -> float:
        y = np.array([records[str(train)][key] for train in sizes], dtype=np.float64)
        return float(np.polyfit(n, y, 1)[0])

    growth = {
        "sizes": list(sizes),
        "fit": "least-squares slope over the sizes",
        "wall_seconds_per_1000_examples": round(1000 * slope("seconds"), 4),
        "embed_assign_seconds_per_1000_examples": round(1000 * slope("per_example_seconds"), 4),
        "rss_bytes_per_example": round(slope("peak_rss_bytes"), 1),
    }
    return {"sizes": records, "growth": growth, "goal": "1M in <= 300 s, peak RSS < 2 GiB"}


def assignment(rows: int, ks: Sequence[int]) -> dict[str, Any]:
    """Exact vs HNSW nearest-centroid search of ``rows`` random unit rows (d=64)."""
    from datapruning.scoring.prototypes import Assigner, normalised

    rng = np.random.default_rng(0)
    x = normalised(rng.normal(size=(rows, 64)).astype(np.float32))
    records = []
    for k in ks:
        centroids = normalised(rng.normal(size=(k, 64)).astype(np.float32))
        record: dict[str, Any] = {"k": k, "rows": rows}
        found = {}
        for kind in ("exact", "ivf", "hnsw"):
            start = time.perf_counter()
            index = Assigner(centroids, kind) if kind != "ivf" else _Ivf(centroids)
            built = time.perf_counter() - start
            found[kind] = index(x)[1]
            record[f"{kind}_seconds"] = round(time.perf_counter() - start, 3)
            record[f"{kind}_build_seconds"] = round(built, 3)
        for kind in ("ivf", "hnsw"):
            record[f"{kind}_finds_exact_centroid"] = float(np.mean(found["exact"] == found[kind]))
        records.append(record)
        print(f"[proto_scale] assign {json.dumps(record)}", flush=True)
    return {"records": records}


class _Ivf:
    """faiss IndexIVFFlat over the centroids: sqrt(k) lists, 8 probed (not in the library:
    measured here, it missed too many nearest centroids to be offered)."""

    def __init__(self, centroids: np.ndarray) -> None:
        import faiss

        k, dim = centroids.shape
        self.nlist = max(1, round(k**0.5))
        self.index = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(dim), dim, self.nlist, faiss.METRIC_INNER_PRODUCT
        )
        self.index.cp.seed = 0
        self.index.cp.min_points_per_centroid = 1  # quiet: the centroids are few by nature
        self.index.train(centroids)
        self.index.nprobe = min(8, self.nlist)
        self.index.add(centroids)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        similarity, nearest = self.index.search(x, 1)
        return 1.0 - similarity[:, 0], nearest[:, 0]


def _dataset(train: int, cache: Path) -> Any:
    os.environ["DATAPRUNING_CACHE_DIR"] = str(cache)
    from datapruning.data.sources import load_dataset

    return load_dataset("mnist1d", {"num_samples": num_samples(train)})


def _proto(data: Any, **params: Any) -> tuple[np.ndarray, dict[str, Any]]:
    from datapruning.config import ScoringConfig
    from datapruning.scoring import score

    scores = score(data, "proto", ScoringConfig(params={"proto": params}), progress=False)
    return scores.values, scores.metadata


OLD = {"encoder_epochs": 30}  # the recipe before the step budget


def budget(train: int, steps: Sequence[int], cache: Path, store: Path) -> dict[str, Any]:
    """Spearman of each step budget's scores with the old recipe's, and the noise floor."""
    from scipy.stats import spearmanr

    data = _dataset(train, cache)
    old, old_meta = _proto(data, **OLD)
    floor, _ = _proto(data, **OLD, seed=1)
    arrays = {"old": old}
    records = [
        {
            "budget": "encoder_epochs=30 (old default)",
            "steps": old_meta["params"]["encoder"]["steps"],
            "seconds": round(old_meta["seconds"], 2),
        },
        {
            "budget": "encoder_epochs=30, seed 1 (noise floor)",
            "spearman_with_old": round(float(spearmanr(old, floor).statistic), 4),
        },
    ]
    for count in steps:
        values, meta = _proto(data, encoder_steps=count)
        arrays[f"steps{count}"] = values
        records.append(
            {
                "budget": f"encoder_steps={count}",
                "steps": count,
                "seconds": round(meta["seconds"], 2),
                "spearman_with_old": round(float(spearmanr(old, values).statistic), 4),
                "final_loss": meta["params"]["encoder"]["final_loss"],
            }
        )
        print(f"[proto_scale] budget {json.dumps(records[-1])}", flush=True)
    np.savez(store, **arrays)
    return {"num_train": data.num_train, "records": records, "scores_file": str(store)}


def quality(
    train: int,
    compare: Sequence[str],
    seeds: Sequence[int],
    epochs: int,
    cache: Path,
    store: Path,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """Students on the hardest/easiest 30%/50% by the old scores and by each of ``compare``
    (``steps<N>`` from the budget phase, or ``old_seed1``: the old recipe with encoder seed
    1, computed here, whose difference from the old scores is the recipe's own noise).

    Runs of an earlier result with the same student recipe and score sets are reused."""
    from datapruning.config import ModelConfig, TrainConfig
    from datapruning.scores import select_positions
    from datapruning.train.loop import train as fit

    data = _dataset(train, cache)
    with np.load(store) as held:
        arrays = {name: held[name] for name in held.files}
    if "old_seed1" in compare and "old_seed1" not in arrays:
        arrays["old_seed1"], _ = _proto(data, **OLD, seed=1)
        np.savez(store, **arrays)
    sets = {name: arrays[name] for name in ("old", *compare)}
    student = {"model": "convnet1d (the dataset default)", "epochs": epochs}
    earlier = {}
    if previous and previous.get("student") == student:
        earlier = {
            (r["scores"], r["strategy"], r["fraction"], r["seed"]): r
            for r in previous.get("runs", [])
        }
    runs = []
    for strategy in ("hard", "easy"):
        for fraction in (0.3, 0.5):
            for seed in seeds:
                for name, values in sets.items():
                    key = (name, strategy, fraction, seed)
                    if key in earlier:
                        runs.append(earlier[key])
                        continue
                    indices = select_positions(values, fraction, strategy, seed)
                    result = fit(
                        data,
                        ModelConfig(),
                        TrainConfig(epochs=epochs, seed=seed, eval_every=0),
                        indices=indices,
                        progress=False,
                    )
                    acc = float(result.summary["final_test_acc"])
                    runs.append(
                        {"scores": name, "strategy": strategy, "fraction": fraction,
                         "seed": seed, "test_acc": acc}
                    )  # fmt: skip
                    print(f"[proto_scale] student {json.dumps(runs[-1])}", flush=True)
    cells = []
    for strategy in ("hard", "easy"):
        for fraction in (0.3, 0.5):
            accs = {
                name: [
                    r["test_acc"]
                    for r in runs
                    if (r["scores"], r["strategy"], r["fraction"]) == (name, strategy, fraction)
                ]
                for name in sets
            }
            cell: dict[str, Any] = {
                "strategy": strategy,
                "fraction": fraction,
                "mean_acc": {name: float(np.mean(a)) for name, a in accs.items()},
                "stdev_points": {
                    name: round(100 * float(np.std(a, ddof=1)), 2) if len(a) > 1 else None
                    for name, a in accs.items()
                },
            }
            cell["delta_points_vs_old"] = {
                name: round(100 * (cell["mean_acc"][name] - cell["mean_acc"]["old"]), 2)
                for name in compare
            }
            cells.append(cell)
    return {
        "num_train": data.num_train,
        "compared": list(compare),
        "student": student,
        "seeds": list(seeds),
        "cells": cells,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--phases",
        nargs="+",
        default=list(PHASES),
        choices=PHASES,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 200_000, 1_000_000])
    parser.add_argument("--threads", type=int, default=None, help="train.threads of scoring")
    parser.add_argument(
        "--before-sizes", type=int, nargs="+", default=[100_000], help="the old recipe's sizes"
    )
    parser.add_argument("--quality-size", type=int, default=20_000)
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument(
        "--compare",
        nargs="+",
        default=None,
        help="score sets students compare with the old ones (default: old_seed1 and the "
        "default budget's steps<N>)",
    )
    parser.add_argument("--student-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--assign-rows", type=int, default=100_000)
    parser.add_argument("--assign-k", type=int, nargs="+", default=[10, 100, 1000, 4096, 8192])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    store = args.cache / f"proto-budget-{args.quality_size}.npz"
    args.cache.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        # The whole file's record: the command that regenerates every phase, each
        # phase's own command (they may have run apart), and the latest machine/versions.
        latest = provenance(__file__, [], ["faiss-cpu", "mnist1d"])
        result["command"] = latest["command"]
        result["commands"] = [result[p]["command"] for p in PHASES if p in result]
        result["machine"], result["versions"] = latest["machine"], latest["versions"]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    for phase in args.phases:
        record = provenance(__file__, argv, ["faiss-cpu", "mnist1d"])
        if phase == "generate":
            record |= generate(args.sizes, args.cache)
        elif phase == "scale":
            record |= score_cli(args.sizes, args.cache, args.threads)
        elif phase == "before":
            extra = ["scoring.params.proto.encoder_epochs=30"]
            record |= score_cli(args.before_sizes, args.cache, args.threads, extra)
        elif phase == "assign":
            record |= assignment(args.assign_rows, args.assign_k)
        elif phase == "budget":
            record |= budget(args.quality_size, args.steps, args.cache, store)
        else:
            from datapruning.scoring.params import DEFAULT_ENCODER_STEPS

            compare = args.compare or ["old_seed1", f"steps{DEFAULT_ENCODER_STEPS}"]
            record |= quality(
                args.quality_size,
                compare,
                args.student_seeds,
                args.student_epochs,
                args.cache,
                store,
                result.get("quality"),
            )
            record["default"] = f"steps{DEFAULT_ENCODER_STEPS}"
        record["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        result[phase] = record
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
