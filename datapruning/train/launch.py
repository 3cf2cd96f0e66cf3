"""``datapruning train --nproc N``: torchrun started for you, on this machine.

The same command runs in N processes (``torchrun --standalone --nproc-per-node N -m
datapruning ...``, through torch's own launcher, in this process), each of which
sees torchrun's environment and joins the run (:mod:`datapruning.train.distributed`).
When the run fails, this prints the first failed process's one-line error: each
leaves its line in a folder this names (:func:`rank_errors`), since torchrun stops
the other processes as soon as one exits, perhaps before rank 0 could say why. When
a process dies of a signal (a kill -9, the out-of-memory killer), the others stop at
their next collective and this says which one it was.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from datapruning.errors import DataPruningError

# The folder where each process of a launched run leaves its one-line error.
RANK_ERRORS_ENV = "DATAPRUNING_RANK_ERRORS"


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
    with rank_errors() as folder:
        # torchrun's processes get this process's environment (one run per CLI process).
        os.environ[RANK_ERRORS_ENV] = str(folder)
        try:
            run(args)
        except ChildFailedError as exc:
            failures = sorted(exc.failures.items(), key=lambda item: (item[1].timestamp, item[0]))
            exited = [failure for _, failure in failures if failure.exitcode > 0]
            # A process killed by a signal is the cause: the others only saw it leave
            # (and may have been seen to exit first). Not the SIGTERM torchrun sends the
            # processes still running once one has left, unless none exited on its own.
            terminated = -signal.SIGTERM
            killed = [(r, f) for r, f in failures if f.exitcode < 0 and f.exitcode != terminated]
            if not exited:
                killed += [(r, f) for r, f in failures if f.exitcode == terminated]
            if not killed:  # the processes said why
                said = first_error(folder)
                if said is not None:
                    print(f"error: {said}", file=sys.stderr)
                return exited[0].exitcode
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
        finally:
            os.environ.pop(RANK_ERRORS_ENV, None)
    return 0


@contextmanager
def rank_errors() -> Iterator[Path]:
    """A temporary folder for the processes of a run to leave their one-line errors in
    (:func:`leave_error`; name it to them in ``$DATAPRUNING_RANK_ERRORS``), read by
    :func:`first_error`."""
    with tempfile.TemporaryDirectory(prefix="datapruning-ranks-") as folder:
        yield Path(folder)


def first_error(folder: Path) -> str | None:
    """The first one-line error left in ``folder`` (the lowest rank's of those left at
    once), if any process left one: the others' failures follow from it (a peer that
    left breaks their next collective)."""
    said = sorted(
        folder.glob("rank-*.txt"),
        key=lambda path: (path.stat().st_mtime_ns, int(path.stem.split("-")[1])),
    )
    return said[0].read_text() if said else None


def leave_error(message: str) -> bool:
    """In a process of a launched run, leave ``message`` for the launcher to print;
    whether it was left (else the process says it itself, as rank 0 of a torchrun the
    user started does)."""
    folder = os.environ.get(RANK_ERRORS_ENV)
    if not folder or not Path(folder).is_dir():
        return False
    from datapruning._io import atomic_write
    from datapruning.train.distributed import launched

    if not launched():
        return False
    # Atomic: torchrun may stop this process while it writes.
    atomic_write(
        Path(folder) / f"rank-{int(os.environ['RANK'])}.txt", lambda p: p.write_text(message)
    )
    return True


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise DataPruningError(f"--nproc is {nproc}; give 1 or more processes")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
