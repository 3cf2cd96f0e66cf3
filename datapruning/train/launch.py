"""``datapruning train --nproc N``: torchrun started for you, on this machine.

The same command runs in N processes (``torchrun --standalone --nproc-per-node N -m
datapruning ...``, through torch's own launcher, in this process), each of which
sees torchrun's environment and joins the run (:mod:`datapruning.train.distributed`).
Only rank 0 prints; when a process dies of a signal (a kill -9, the out-of-memory
killer), the others stop at their next collective and this says which one it was.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence

from datapruning.errors import DataPruningError


def launch(nproc: int, argv: Sequence[str], threads: int | None = 1) -> int:
    """Run ``python -m datapruning *argv`` in ``nproc`` processes; their exit status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun warns about OMP_NUM_THREADS unless it is set; train.threads sets torch's.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads or 1))
    # The agent logs each start, failure and shutdown (each module's logger at its own
    # level); the processes and this function say what matters, in one line.
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "datapruning"])
    # Given apart: torchrun's parser would take the command's own options (--nproc) as
    # abbreviations of its own.
    args.training_script_args = list(argv)
    try:
        run(args)
    except ChildFailedError as exc:
        # A process killed by a signal is the cause: the others only saw it leave (and
        # may have been seen to exit first).
        killed = sorted((r, f) for r, f in exc.failures.items() if f.exitcode < 0)
        if not killed:  # the processes said why themselves (rank 0 printed it)
            return exc.get_first_failure()[1].exitcode
        rank, failure = killed[0]
        name = _signal_name(-failure.exitcode)
        print(
            f"error: process {rank} of {nproc} was killed by {name}; the others stopped. "
            "Run the same command again to continue from the last resume point "
            "(train.checkpoint_every)",
            file=sys.stderr,
        )
        return 1
    except SignalException as exc:  # the processes got it too and left a resume point
        return 128 + int(exc.sigval)
    return 0


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise DataPruningError(f"--nproc is {nproc}; give 1 or more processes")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
