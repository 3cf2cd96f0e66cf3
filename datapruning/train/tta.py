"""The time-to-accuracy clock.

Only training counts: the clock runs while batches are loaded and stepped, and
stops while the model is evaluated; on an asynchronous device (CUDA) it
synchronises the device when it starts and stops. Evaluation time is kept apart so reports
can show it. Time to a target accuracy is the training time at the first
evaluation that reached it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from datapruning.errors import DataPruningError
from datapruning.train.summary import check_summary_format


class Stopwatch:
    """Accumulates the wall time spent inside ``with watch.running():`` blocks
    (or between :meth:`start` and :meth:`stop`).

    ``sync`` waits for an asynchronous device (``torch.cuda.synchronize``) and
    is called when the watch starts and when it stops, so the time counts the
    device's work, not only the host's queueing of it
    (:func:`datapruning.train.device.synchronizer`).
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.seconds = 0.0
        self.sync = sync
        self._started: float | None = None

    def start(self) -> None:
        if self.sync is not None:
            self.sync()  # work queued before the start is not ours
        self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is None:
            return
        if self.sync is not None:
            self.sync()
        self.seconds += time.perf_counter() - self._started
        self._started = None

    @contextmanager
    def running(self) -> Iterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop()


def time_to_accuracy(
    curve: Iterable[tuple[float, float]], targets: Sequence[float] | Mapping[str, float]
) -> dict[str, float | None]:
    """Map each target to the first ``seconds`` whose accuracy reached it, else None.

    ``curve`` holds ``(train_seconds, accuracy)`` pairs in training order;
    ``targets`` are accuracies, or a mapping from key to accuracy
    (:func:`resolve_targets`).
    """
    points = list(curve)
    if not isinstance(targets, Mapping):
        targets = {format_target(target): target for target in targets}
    return {
        key: next((seconds for seconds, accuracy in points if accuracy >= target), None)
        for key, target in targets.items()
    }


def format_target(target: float) -> str:
    """A stable key for a target accuracy: 0.9 -> '0.9', 0.925 -> '0.925'."""
    return f"{target:.4f}".rstrip("0").rstrip(".")


def resolve_targets(
    targets: Sequence[float | str], reference_accuracy: float | None = None
) -> dict[str, float]:
    """Map each configured target to the accuracy it stands for.

    ``0.9`` is an absolute test accuracy (key ``'0.9'``); ``'0.99r'`` is 99% of
    the reference run's final accuracy (key ``'0.99r'``).
    """
    from datapruning.train.settings import parse_target

    resolved: dict[str, float] = {}
    for target in targets:
        value, relative = parse_target(target)
        if not relative:
            resolved[format_target(value)] = value
            continue
        if reference_accuracy is None:
            raise DataPruningError(
                f"target {target!r} is relative; set train.reference to a finished run"
            )
        resolved[format_target(value) + "r"] = value * reference_accuracy
    return resolved


def reference_accuracy(path: str | os.PathLike[str]) -> float:
    """The final test accuracy of a finished run (its directory or summary.json)."""
    path = Path(path)
    summary_path = path / "summary.json" if path.is_dir() else path
    try:
        summary = json.loads(summary_path.read_text())
        if isinstance(summary, dict):
            check_summary_format(summary_path, summary)
        return float(summary["final_test_acc"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataPruningError(
            f"reference {str(path)!r} is not a finished run (summary.json with final_test_acc)"
        ) from None
