"""What every ``bench/results/*.json`` records beside its figures: the command, machine, versions.

A figure in the README or docs/ must be reproducible from a committed results
file, so each benchmark writes ``**provenance(__file__, argv)`` into its JSON:
the command that regenerates it (the arguments actually parsed, not
``sys.argv`` when ``main(argv)`` is called from a test), the machine it ran on
(cores, platform, and the 1/5/15-minute load averages when the record is made:
this machine is a shared 2-core CPU, so timings are noisy and the load says how
much) and the versions of Python and the libraries that decide
the figures. ``tests/bench/test_results_recorded.py`` checks every results file.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "numpy", "datapruning-tta")


def provenance(
    script: str | os.PathLike[str],
    argv: Sequence[str] | None,
    packages: Sequence[str] = (),
) -> dict[str, Any]:
    """``command``, ``date``, ``machine`` and ``versions`` for a results file.

    ``script`` is the benchmark's ``__file__``; ``argv`` the arguments its parser
    read (``None``: ``sys.argv[1:]``); ``packages`` more distributions to record.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(script).resolve()
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in (*PACKAGES, *packages):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "command": shlex.join([".venv/bin/python", str(shown), *map(str, args)]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "load_average": list(os.getloadavg()),
        },
        "versions": versions,
    }


def kernel_machine(device: str = "cpu") -> dict[str, Any]:
    """The kernel benchmarks' machine record: processor, cores, torch threads, load, torch and
    Triton versions and, on CUDA, the GPU (its name goes into the GPU results' file names).

    torch and triton are imported here, not at the top: the kernel benchmarks set
    ``TRITON_INTERPRET`` before Triton is first imported.
    """
    import torch

    try:
        import triton

        triton_version: str | None = triton.__version__
    except ImportError:
        triton_version = None
    record: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        record |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
        }
    return record


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
