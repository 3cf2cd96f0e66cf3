"""Fan-out and reuse of a sweep, written as JSON.

``fanout``: the same >= 12-cell pipeline (one teacher, EL2N scores in two seed
groups, a students grid) run sequentially, on a local Dask cluster of
``--workers`` single-threaded workers that ``--runner dask`` starts itself
(cluster start and each worker's first imports of torch and Prefect included),
and on such a cluster already running (``--dask-address``, as on a cluster;
started and warmed once, its start reported apart), each in a fresh directory,
``--reps`` times each, alternating. Reports the flow's wall time and, per cell,
the median and spread of ``train_seconds`` under each runner: fan-out must not
slow a run's own clock. The dataset is generated (and
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
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
from datapruning.config import parse_config
from datapruning.pipeline.train_cells import run_student
from datapruning.pipeline.grid import experiments
cfg = parse_config(json.loads(sys.argv[1]))
(exp,) = experiments(cfg)
seconds = [
    run_student(exp.cfg, exp.recipes[i], None, None, refresh=True)["train_seconds"]
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


@contextmanager
def running_cluster(workers: int) -> Iterator[tuple[str, float]]:
    """The local cluster ``--runner dask`` starts, started here once and warmed (every worker
    has imported the tasks' modules), as a cluster that is already running would be."""
    from distributed import Client

    from datapruning.flows.runners import local_cluster

    start = time.perf_counter()
    with local_cluster(workers) as address:
        with Client(address) as client:
            client.run(importlib.import_module, "datapruning.flows.tasks")
        yield address, time.perf_counter() - start


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
    runners = ("sequential", "dask", "dask_running")
    walls: dict[str, list[float]] = {runner: [] for runner in runners}
    cells: dict[str, dict[str, list[float]]] = {runner: {} for runner in runners}
    first_dir = None
    calibration = control(work)
    print("control", calibration["median_ratio_two_at_once_over_alone"], flush=True)
    try:
        with (
            temporary_settings({PREFECT_API_URL: server.api_url}),
            running_cluster(args.workers) as (address, cluster_seconds),
        ):
            for rep in range(args.reps):
                for runner in runners:
                    out = work / f"{runner}-{rep}"
                    config = out / "sweep.yaml"
                    out.mkdir(parents=True)
                    config.write_text(yaml.safe_dump(SWEEP | {"output_dir": str(out / "runs")}))
                    options: dict[str, Any] = {
                        "sequential": {"runner": "sequential"},
                        "dask": {"runner": "dask", "workers": args.workers},
                        "dask_running": {"runner": "dask", "dask_address": address},
                    }[runner]
                    start = time.perf_counter()
                    result = pipeline(str(config), **options)
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

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    per_cell = {}
    for name in sorted(cells["sequential"]):
        seq = statistics.median(cells["sequential"][name])
        per_cell[name] = {runner: spread(cells[runner][name]) for runner in runners} | {
            f"ratio_of_medians_{runner}": statistics.median(cells[runner][name]) / seq
            for runner in runners[1:]
        }
    medians = {runner: statistics.median(walls[runner]) for runner in runners}
    result = {
        **recorded,
        "sweep": SWEEP,
        "cells": len(per_cell),
        "workers": args.workers,
        "reps": args.reps,
        "prefect_server_start_seconds": server_seconds,
        "running_cluster_start_and_warm_seconds": cluster_seconds,
        "wall_seconds": walls,
        "median_wall_seconds": medians,
        "speedup": medians["sequential"] / medians["dask"],
        "speedup_running_cluster": medians["sequential"] / medians["dask_running"],
        "train_seconds_per_cell": per_cell,
        **{
            f"train_seconds_ratio_{runner}_over_sequential": spread(
                [cell[f"ratio_of_medians_{runner}"] for cell in per_cell.values()]
            )
            for runner in runners[1:]
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
    print(
        f"speed-up {result['speedup']:.2f}x (running cluster "
        f"{result['speedup_running_cluster']:.2f}x), reuse ratio {result['reuse']['ratio']:.3f}"
    )


if __name__ == "__main__":
    main()
