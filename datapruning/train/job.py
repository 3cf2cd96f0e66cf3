"""A run with ``train.nproc`` above 1, started from code that itself runs in one process.

The pipeline's cells call :func:`datapruning.train.loop.train` in their own process (a
Dask worker's thread, a Prefect task). A cell whose ``train.nproc`` is N hands the
same call to N processes instead: :func:`train_in_processes` writes the call's
arguments to ``job.pkl`` in the run directory and starts ``torchrun --standalone
--nproc-per-node N -m datapruning.train.job job.pkl`` as a child process (torchrun
itself needs the main thread of its process, which a worker's task does not have).
Each process loads the dataset by name, joins the group and trains
(:mod:`datapruning.train.distributed`); rank 0 writes the run directory as usual and
the cell reads its ``summary.json`` (or, when the run fails, the line the first
failed process left: :func:`datapruning.train.launch.rank_errors`). Rerunning a cell
that was stopped resumes the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from datapruning._io import atomic_write
from datapruning.errors import DataPruningError
from datapruning.train.launch import RANK_ERRORS_ENV, first_error, leave_error, rank_errors

JOB_NAME = "job.pkl"


def train_in_processes(
    dataset: tuple[str, dict[str, Any]], run_dir: Path, **train_kwargs: Any
) -> dict[str, Any]:
    """``train(load_dataset(*dataset), run_dir=run_dir, **train_kwargs)`` on
    ``train_cfg.nproc`` processes; the run's summary."""
    nproc = train_kwargs["train_cfg"].nproc
    run_dir.mkdir(parents=True, exist_ok=True)
    job = run_dir / JOB_NAME
    payload = pickle.dumps({"dataset": dataset, "run_dir": str(run_dir), **train_kwargs})
    atomic_write(job, lambda path: path.write_bytes(payload))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", "--module", "datapruning.train.job", str(job),
    ]  # fmt: skip
    threads = str(train_kwargs["train_cfg"].threads or 1)
    with rank_errors() as folder:
        # Not os.environ: other cells of this process may be starting their own runs.
        env = {**os.environ, "OMP_NUM_THREADS": threads, RANK_ERRORS_ENV: str(folder)}
        # The processes' output is not the cell's: a failure is read from the folder.
        quiet = subprocess.DEVNULL
        done = subprocess.run(command, env=env, stdout=quiet, stderr=quiet, preexec_fn=_every_core)
        if done.returncode:
            why = first_error(folder) or f"exit status {done.returncode}"
            raise DataPruningError(
                f"the run in {str(run_dir)!r} on {nproc} processes failed: {why}"
            )
    job.unlink(missing_ok=True)
    return json.loads((run_dir / "summary.json").read_text())


def _every_core() -> None:
    """The processes may use every core: a local Dask worker is pinned to its own share
    (flows.runners.pin_workers), which the N processes would otherwise split; the cell
    took N of the queue's slots (flows.queue.CellQueue) so that they are free."""
    if hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, range(os.cpu_count() or 1))


def main(argv: list[str]) -> int:
    """One process of a job: load it and train; a failure leaves its line for the cell."""
    from datapruning.data.sources import load_dataset
    from datapruning.train import distributed
    from datapruning.train.loop import train

    job = pickle.loads(Path(argv[0]).read_bytes())  # written by train_in_processes above
    name, params = job.pop("dataset")
    try:
        distributed.join(job["train_cfg"].device)
        train(load_dataset(name, params), **job)
    except DataPruningError as exc:
        # Every rank leaves its line: torchrun may stop rank 0 before it gets as far.
        _say(str(exc), everywhere=False)
        # At once, as the CLI's processes do (datapruning.cli._end_process).
        os._exit(2)
    except Exception as exc:  # a bug: its traceback in a log, not in the cell's stderr
        from datapruning._crash import crash_line

        _say(crash_line(exc, f"python -m datapruning.train.job {argv[0]}", "a run's process"))
        os._exit(1)
    distributed.leave()
    return 0


def _say(line: str, everywhere: bool = True) -> None:
    """Leave ``line`` for the cell; without a folder to leave it in (a job started by
    hand), print it (a user error: from rank 0 only)."""
    from datapruning.train import distributed

    if not leave_error(line) and (everywhere or distributed.current().writes):
        print(f"error: {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
