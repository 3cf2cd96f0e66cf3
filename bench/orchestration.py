"""Fan-out and reuse of a sweep, written as JSON.

``fanout``: the same >= 12-cell pipeline (one teacher, EL2N scores in two seed
groups, a students grid) run sequentially and on a local Dask cluster of
``--workers`` single-threaded workers, each in a fresh directory, ``--reps``
times each, alternating. Reports the flow's wall time (Dask's cluster start
included) and, per cell, the median and spread of ``train_seconds`` under each
runner: fan-out must not slow a run's own clock. The dataset is generated (and
cached on disk) before any timing, so neither runner pays for it.
``reuse``: the sequential pipeline rerun on the directory of its first run,
where every run and the scores are reused, against the first run's wall time.
Prefect's temporary server starts once, before any timing, and its start-up is
reported apart.
``control``: the machine's own answer, without Prefect or Dask: six random-subset
cells trained in one plain process alone, then in two plain processes at once.
On a quiet 2-core machine the two agree; if two processes at once are slower
per run, the machine cannot give two runs a core each, and fan-out cannot
speed up by more than it allows.

Cells must be long against a fan-out's fixed costs (starting the cluster, each
worker importing torch and Prefect, a few Prefect API calls per task): the
defaults give cells of tens of seconds.

    .venv/bin/python bench/orchestration.py --out bench/results/orchestration.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from provenance import provenance

SWEEP = {
    "name": "bench",
    "dataset": {"name": "mnist1d", "params": {"num_samples": 10000, "seed": 42}},
    "model": {"name": "convnet1d", "params": {"channels": 32}},
    "train": {"epochs": 30, "batch_size": 100, "targets": [0.5], "threads": 1},
    "scoring": {"metric": "el2n", "seeds": 2, "epochs": 3, "ensemble_size": 1},
    "students": {
        "fractions": [0.3, 0.5, 0.7],
        "strategies": ["random", "hard"],
        "kd": [False, True],
        "seeds": [0],
    },
}


CONTROL_CELLS = [0, 4, 8] * 2  # random-subset students without KD: no scores, no teacher

CONTROL = """
import json, sys
from datapruning import orchestration as orch
from datapruning.config import parse_config
cfg = parse_config(json.loads(sys.argv[1]))
(exp,) = orch.experiments(cfg)
seconds = [
    orch.run_student(exp.cfg, exp.recipes[i], None, None, refresh=True)["train_seconds"]
    for i in json.loads(sys.argv[2])
]
print(json.dumps(seconds))
"""


def control(work: Path) -> dict[str, Any]:
    """Per-run train_seconds of plain processes: one alone, then two at once."""
    import json
    import subprocess

    def start(tag: str) -> subprocess.Popen:
        cfg = SWEEP | {"output_dir": str(work / f"control-{tag}")}
        return subprocess.Popen(
            [sys.executable, "-c", CONTROL, json.dumps(cfg), json.dumps(CONTROL_CELLS)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def seconds(process: subprocess.Popen) -> list[float]:
        out, _ = process.communicate()
        return json.loads(out.strip().splitlines()[-1])

    alone = seconds(start("alone"))
    pair = [start("a"), start("b")]
    together = [seconds(process) for process in pair]
    ratios = [statistics.median(run) / statistics.median(alone) for run in together]
    return {
        "cells": CONTROL_CELLS,
        "alone_train_seconds": alone,
        "two_at_once_train_seconds": together,
        "median_ratio_two_at_once_over_alone": statistics.median(ratios),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/orchestration.json"))
    parser.add_argument("--epochs", type=int, default=SWEEP["train"]["epochs"])
    parser.add_argument("--samples", type=int, default=SWEEP["dataset"]["params"]["num_samples"])
    parser.add_argument("--channels", type=int, default=SWEEP["model"]["params"]["channels"])
    args = parser.parse_args(argv)
    SWEEP["train"]["epochs"] = args.epochs
    SWEEP["dataset"]["params"]["num_samples"] = args.samples
    SWEEP["model"]["params"]["channels"] = args.channels
    recorded = provenance(__file__, argv, packages=("prefect", "prefect-dask", "distributed"))

    from datapruning.data.sources import load_dataset

    load_dataset(SWEEP["dataset"]["name"], SWEEP["dataset"]["params"])  # into the disk cache

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.server.api.server import SubprocessASGIServer

    start = time.perf_counter()
    server = SubprocessASGIServer()
    server.start(timeout=180)
    server_seconds = time.perf_counter() - start
    # Spawned Dask workers find the server through the environment.
    os.environ["PREFECT_API_URL"] = server.api_url

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from datapruning._io import write_json
    from datapruning.flows.pipeline import pipeline

    work = Path(tempfile.mkdtemp(prefix="bench-orchestration-"))
    walls: dict[str, list[float]] = {"sequential": [], "dask": []}
    cells: dict[str, dict[str, list[float]]] = {"sequential": {}, "dask": {}}
    first_dir = None
    calibration = control(work)
    print("control", calibration["median_ratio_two_at_once_over_alone"], flush=True)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            for rep in range(args.reps):
                for runner in ("sequential", "dask"):
                    out = work / f"{runner}-{rep}"
                    config = out / "sweep.yaml"
                    out.mkdir(parents=True)
                    config.write_text(yaml.safe_dump(SWEEP | {"output_dir": str(out / "runs")}))
                    start = time.perf_counter()
                    result = pipeline(
                        str(config),
                        runner=runner,
                        workers=args.workers if runner == "dask" else None,
                    )
                    walls[runner].append(time.perf_counter() - start)
                    assert result["counts"]["failed"] == 0, result["counts"]
                    for record in result["records"]:
                        cells[runner].setdefault(record["run"], []).append(record["train_seconds"])
                    print(runner, rep, f"{walls[runner][-1]:.1f} s", result["counts"], flush=True)
                    if first_dir is None:
                        first_dir = config
            start = time.perf_counter()
            again = pipeline(str(first_dir))
            reuse_seconds = time.perf_counter() - start
            print("reuse", f"{reuse_seconds:.1f} s", again["counts"], flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    per_cell = {}
    for name in sorted(cells["sequential"]):
        seq, fan = cells["sequential"][name], cells["dask"][name]
        per_cell[name] = {
            "sequential": {"median": statistics.median(seq), "min": min(seq), "max": max(seq)},
            "dask": {"median": statistics.median(fan), "min": min(fan), "max": max(fan)},
            "ratio_of_medians": statistics.median(fan) / statistics.median(seq),
        }
    ratios = [cell["ratio_of_medians"] for cell in per_cell.values()]
    seq_wall, dask_wall = statistics.median(walls["sequential"]), statistics.median(walls["dask"])
    result = {
        **recorded,
        "sweep": SWEEP,
        "cells": len(per_cell),
        "workers": args.workers,
        "reps": args.reps,
        "prefect_server_start_seconds": server_seconds,
        "wall_seconds": walls,
        "median_wall_seconds": {"sequential": seq_wall, "dask": dask_wall},
        "speedup": seq_wall / dask_wall,
        "train_seconds_per_cell": per_cell,
        "train_seconds_ratio_dask_over_sequential": {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        },
        "control": calibration,
        "reuse": {
            "first_run_wall_seconds": walls["sequential"][0],
            "rerun_wall_seconds": reuse_seconds,
            "ratio": reuse_seconds / walls["sequential"][0],
            "counts": again["counts"],
        },
        "load_average_after": list(os.getloadavg()),
    }
    write_json(args.out, result)
    print(f"speed-up {result['speedup']:.2f}x, reuse ratio {result['reuse']['ratio']:.3f}")


if __name__ == "__main__":
    main()
