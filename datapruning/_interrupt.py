"""SIGINT and SIGTERM stop a long job at a point it can resume from.

SIGKILL cannot be caught: resuming after one relies on every resume file being
written atomically (:mod:`datapruning._io`), so a kill leaves the previous
resume point whole. SIGINT (Ctrl-C) and SIGTERM (what ``kill``, schedulers and
container runtimes send first) can be caught, and are turned into
:class:`~datapruning.errors.Interrupted`:

- :func:`deferred_stop` (the training loop) only records the signal; the loop
  checks it at each step boundary, writes its resume point there and raises.
  A second SIGINT raises at once, for a user who will not wait.
- :func:`immediate_stop` (scoring) raises at once: its resume points are the
  seed groups already saved, and a group half trained has nothing to save.

Handlers can only be set in the main thread; elsewhere (Dask or Prefect worker
threads) both leave the signals alone.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from datapruning.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], None]


class StopRequest:
    """The signal received so far (None: none); true once one arrived."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextmanager
def _handling(handler: Handler) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def deferred_stop() -> Iterator[StopRequest]:
    """Within the block, SIGINT/SIGTERM set the request the caller polls at safe points."""
    request = StopRequest()

    def handler(signum: int, frame: FrameType | None) -> None:
        if request and signum == signal.SIGINT:  # Ctrl-C a second time: stop now
            raise Interrupted(signum, "stopped at once, before the next step boundary")
        request.signum = signum

    with _handling(handler):
        yield request


@contextmanager
def immediate_stop() -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM raise Interrupted wherever the main thread is."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum, "stopped")

    with _handling(handler):
        yield
