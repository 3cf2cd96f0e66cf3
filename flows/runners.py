"""Task runners for the flows: one process, a process pool, or Dask workers.

No thread runner for training: the loop sets process-wide torch state (threads,
determinism, seeds), so two runs in one process would interfere. Timed runs
stay honest under fan-out: every worker runs one task at a time (Dask workers
with one thread each), and on a local Dask cluster each worker process is pinned
to its own cores, so two runs never share a core and a run's torch threads (the
scoring ensemble's included, which follow the process's affinity) stay on its
worker's cores. The process pool is not pinned: give it at most one worker per
core. Runs, scores and betons are files: on a cluster every worker
must see the run directory at the same path (a shared filesystem); that is
checked before anything runs.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from datapruning.errors import DataPruningError

RUNNERS = ("sequential", "processes", "dask")
# A worker's statistical profiler samples its threads every 10 ms, on the core the
# training task is pinned to, and its event loop checks itself every 20 ms: neither
# is needed to run cells, and both take time from the run's own clock.
# Cells go to the cluster only when a worker is free (flows/pipeline.py), so there is
# nothing to steal, and the scheduler need not look every second.
QUIET_WORKERS = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.scheduler.work-stealing": False,
}
# Seconds to wait for Prefect's temporary server (it took 25-46 s to start in
# bench/results/orchestration*.json; Prefect's own default wait is 20 s).
SERVER_START_TIMEOUT = 180
# Seconds to wait for an existing Dask scheduler before calling it unreachable.
CONNECT_TIMEOUT = 10


def check_runner(runner: str, dask_address: str | None, workers: int | None) -> None:
    """Refuse bad runner options before anything starts."""
    if runner not in RUNNERS:
        raise DataPruningError(f"unknown runner {runner!r}; choose one of: {', '.join(RUNNERS)}")
    if dask_address is not None and runner != "dask":
        raise DataPruningError(f"--dask-address needs --runner dask, not {runner}")
    if workers is not None and workers < 1:
        raise DataPruningError(f"--workers {workers} must be at least 1")
    if workers is not None and runner == "sequential":
        raise DataPruningError("--workers needs --runner processes or dask")
    if workers is not None and dask_address is not None:
        raise DataPruningError(
            "--workers sizes a local cluster; an existing scheduler (--dask-address) "
            "has its own workers"
        )


class Runner(NamedTuple):
    """A Prefect task runner and how many cells it runs at once."""

    task_runner: Any
    slots: int


@contextmanager
def task_runner(
    runner: str,
    run_root: Path,
    *,
    dask_address: str | None = None,
    workers: int | None = None,
) -> Iterator[Runner]:
    """The Prefect task runner for ``runner``; a local Dask cluster lives as long as the block."""
    check_runner(runner, dask_address, workers)
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if runner == "sequential":
        # One task at a time in the flow's process: today's behaviour.
        yield Runner(ThreadPoolTaskRunner(max_workers=1), 1)
        return
    if runner == "processes":
        n = workers or _cores()
        yield Runner(ProcessPoolTaskRunner(max_workers=n), n)
        return
    from prefect_dask import DaskTaskRunner

    if dask_address is not None:
        # The workers there when the flow starts; one that joins later gets cells too
        # once a slot frees, which is all the flow needs.
        threads = check_scheduler(dask_address, run_root)
        yield Runner(DaskTaskRunner(address=dask_address), threads)
        return
    n = workers or _cores()
    with local_cluster(n) as address:
        yield Runner(DaskTaskRunner(address=address), n)


@contextmanager
def local_cluster(workers: int) -> Iterator[str]:
    """A Dask cluster of ``workers`` single-threaded, pinned, quiet worker processes on this
    machine, for as long as the block runs; yields the scheduler's address."""
    import dask
    from distributed import Client, LocalCluster

    # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 so that they hand
    # memory back sooner; glibc then maps and unmaps every large tensor, which made each
    # cell's training 1.4-1.7x slower than in a plain process (bench/orchestration.py).
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    quiet = QUIET_WORKERS | {"distributed.nanny.pre-spawn-environ": environ}
    with dask.config.set(quiet):
        # memory_limit=0: no memory monitor polling every 100 ms on the cell's core, and no
        # worker paused or restarted at a share of the RAM: a cell's memory is its own.
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,
        )
    try:
        with Client(cluster) as client:
            pin_workers(client)
        yield cluster.scheduler_address
    finally:
        # The nanny kills a worker still running 4 s after it is told to close: what
        # Prefect holds for the server goes first. (Closing takes 2-4 s here anyway, most
        # of it the workers' interpreters unloading torch and Prefect.)
        with contextlib.suppress(Exception), Client(cluster) as client:
            client.run(_drain_prefect)
        cluster.close()


def _drain_prefect() -> None:
    """Send what Prefect still holds for the server (logs, task-run events) and stop its
    threads, so that a worker exits at once instead of being killed 4 s later."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


@contextmanager
def prefect_api() -> Iterator[None]:
    """A Prefect API for the flow and every process it starts.

    Without PREFECT_API_URL, Prefect would start a temporary server inside the
    flow's process that spawned workers cannot see: each would start its own
    (slowly) and record its task runs there. So one temporary server is started
    here, whatever the runner, and its address handed down through the
    environment; a server that does not come up is a one-line error.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    from datapruning._interrupt import immediate_stop

    server = SubprocessASGIServer()
    try:
        server.start(timeout=SERVER_START_TIMEOUT)
    except Exception as exc:  # Prefect raises RuntimeError or httpx errors; all mean "no server"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataPruningError(
            f"Prefect's temporary server did not start within {SERVER_START_TIMEOUT} s "
            f"({first[:120]}); start one with `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        ) from None
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        # The server stops at exit (Prefect registers that), after the last logs reach it.
        # A SIGTERM left to its default action would end the process without that exit,
        # and the server would outlive it: so SIGINT and SIGTERM raise Interrupted here
        # (Prefect's own handler marks the flow crashed, then hands the signal on to it).
        with temporary_settings({PREFECT_API_URL: server.api_url}), immediate_stop():
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_scheduler(address: str, run_root: Path) -> int:
    """An existing scheduler must answer, run one task per worker, and share ``run_root``.

    Returns how many workers it has.
    """
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise DataPruningError(
            f"Dask scheduler {address!r} is unreachable ({type(exc).__name__}); start one "
            "with `dask scheduler` or check --dask-address"
        ) from None
    with client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        if not workers:
            raise DataPruningError(f"Dask scheduler {address!r} has no workers; start some")
        crowded = [w["name"] for w in workers.values() if w.get("nthreads", 1) != 1]
        if crowded:
            raise DataPruningError(
                f"Dask workers {crowded} run several tasks at once, which corrupts the training "
                "clock; start them with `dask worker --nthreads 1`"
            )
        check_shared(client, run_root)
        return len(workers)


def check_shared(client: Any, run_root: Path) -> None:
    """Refuse a run directory some worker does not see (no shared filesystem)."""
    run_root = run_root.resolve()
    run_root.mkdir(parents=True, exist_ok=True)
    probe = run_root / f".shared-{uuid.uuid4().hex}"
    probe.write_text("")
    try:
        seen = client.run(os.path.exists, str(probe))
    finally:
        probe.unlink(missing_ok=True)
    blind = sorted(address for address, found in seen.items() if not found)
    if blind:
        raise DataPruningError(
            f"run directory {str(run_root)!r} is not visible from Dask workers {blind}; put "
            "output_dir on a filesystem every worker mounts at the same path"
        )


def pin_workers(client: Any) -> None:
    """Give each local worker process its own cores (split evenly over this machine's)."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    addresses = sorted(client.scheduler_info(n_workers=-1)["workers"])
    share = max(1, len(cores) // len(addresses))
    for i, address in enumerate(addresses):
        mine = cores[(i * share) % len(cores) :][:share]
        client.run(_pin_process, mine, workers=[address])


def _pin_process(cores: list[int]) -> list[int]:
    # Every thread of the worker process, and (by inheritance) those it starts later.
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cores)
    return sorted(os.sched_getaffinity(0))
