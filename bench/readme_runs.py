"""README figures that come from ordinary commands, re-run and recorded as JSON.

Each part runs the commands the README quotes, in-process through the CLI, and
writes what the README cites with the command, machine and versions
(``bench/provenance.py``):

- ``loaders``: ``datapruning train configs/quickstart.yaml --set
  train.loader=L`` for L in memory/torch/ffcv and seeds 0, 1 (accuracy,
  training seconds, the first epoch's seconds, which hold FFCV's JIT
  compilation) -> ``bench/results/loop_loaders.json``;
- ``rewind``: ``datapruning train configs/sparse.yaml`` with and without weight
  rewinding -> ``bench/results/rewind.json``.

Accuracies are deterministic for the seeds; seconds depend on the machine and
its load (recorded in ``machine``).

    .venv/bin/python bench/readme_runs.py loaders rewind
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from provenance import provenance

from datapruning._io import write_json

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def _cli(*args: object) -> float:
    """Run ``datapruning ARGS`` in-process; its wall seconds. A failure stops the benchmark."""
    from datapruning.cli import main

    start = time.perf_counter()
    code = main([str(arg) for arg in args])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"datapruning {' '.join(map(str, args))} exited {code}")
    return seconds


def _summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


def loaders(tmp: Path) -> dict[str, Any]:
    os.environ["DATAPRUNING_CACHE_DIR"] = str(tmp / "cache")  # convert afresh, outside the clock
    runs = []
    for loader in ("memory", "torch", "ffcv"):
        for seed in (0, 1):
            run_dir = tmp / f"{loader}-{seed}"
            _cli(
                "train",
                REPO / "configs/quickstart.yaml",
                "--set",
                f"train.loader={loader}",
                "--set",
                f"train.seed={seed}",
                "--out",
                run_dir,
            )
            summary = _summary(run_dir)
            first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
            runs.append(
                {
                    "loader": loader,
                    "seed": seed,
                    "final_test_acc": summary["final_test_acc"],
                    "train_seconds": summary["train_seconds"],
                    "first_epoch_train_seconds": first["train_seconds"],
                    "epochs": summary["epochs"],
                }
            )
            print(runs[-1], flush=True)
    return {"config": "configs/quickstart.yaml", "runs": runs}


REWINDS = {
    "end 0.3, no rewinding": ["train.sparsity.start=0.05", "train.sparsity.end=0.3"],
    "end 0.3, rewind to 5%": [
        "train.sparsity.start=0.05",
        "train.sparsity.end=0.3",
        "train.sparsity.rewind=0.05",
    ],
    "end 0.3, rewind to step 0": [
        "train.sparsity.start=0.05",
        "train.sparsity.end=0.3",
        "train.sparsity.rewind=0",
    ],
    "default end 0.6, rewind to 5%": ["train.sparsity.rewind=0.05"],
}


def rewind(tmp: Path) -> dict[str, Any]:
    runs = []
    for name, overrides in REWINDS.items():
        run_dir = tmp / f"rewind-{len(runs)}"
        sets = [arg for item in overrides for arg in ("--set", item)]
        _cli("train", REPO / "configs/sparse.yaml", *sets, "--out", run_dir)
        summary = _summary(run_dir)
        runs.append({"recipe": name, "overrides": overrides, **_acc(summary)})
        print(runs[-1], flush=True)
    return {"config": "configs/sparse.yaml", "seed": 0, "runs": runs}


def _acc(summary: dict[str, Any]) -> dict[str, Any]:
    return {"final_test_acc": summary["final_test_acc"], "sparsity": summary.get("sparsity")}


PARTS = {
    "loaders": (loaders, "loop_loaders.json"),
    "rewind": (rewind, "rewind.json"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="+", choices=sorted(PARTS))
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON")
    args = parser.parse_args(argv)
    for part in args.parts:
        run, name = PARTS[part]
        record = provenance(__file__, [part, *(argv_extra(args))])
        with tempfile.TemporaryDirectory() as tmp:
            record.update(run(Path(tmp)))
        write_json(args.results / name, record)
        print(f"wrote {args.results / name}", flush=True)
    return 0


def argv_extra(args: argparse.Namespace) -> list[str]:
    return [] if args.results == RESULTS else ["--results", str(args.results)]


if __name__ == "__main__":
    raise SystemExit(main())
