"""The time-to-accuracy clock.

Only training counts: the clock runs while batches are loaded and stepped, and
stops while the model is evaluated. Evaluation time is kept apart so reports
can show it. Time to a target accuracy is the training time at the first
evaluation that reached it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager


class Stopwatch:
    """Accumulates the wall time spent inside ``with watch.running():`` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def time_to_accuracy(
    curve: Iterable[tuple[float, float]], targets: Sequence[float]
) -> dict[str, float | None]:
    """Map each target to the first ``seconds`` whose accuracy reached it, else None.

    ``curve`` holds ``(train_seconds, accuracy)`` pairs in training order.
    """
    points = list(curve)
    reached: dict[str, float | None] = {}
    for target in targets:
        reached[format_target(target)] = next(
            (seconds for seconds, accuracy in points if accuracy >= target), None
        )
    return reached


def format_target(target: float) -> str:
    """A stable key for a target accuracy: 0.9 -> '0.9', 0.925 -> '0.925'."""
    return f"{target:.4f}".rstrip("0").rstrip(".")
