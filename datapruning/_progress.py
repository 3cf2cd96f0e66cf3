"""Progress of long work: a tqdm bar on a terminal, plain lines on stderr elsewhere.

A bar is all a person at a terminal needs, but tqdm hides itself when stderr is
not a terminal (a batch job's log, ``nohup``, a pipe), and a run there used to
print nothing at all until it ended: issue 25 saw ``score --metric el2n`` on an
image npz run 11 minutes without a line. So off a terminal every phase writes a
line per unit of work (a training epoch, a trained seed), each with its time::

    train epoch 3/30: loss 0.412, test acc 91.2%, 1.3 s

``progress`` has one meaning everywhere (the loop, the scoring ensembles, the seed
store, proto's phases): True a bar, False nothing (the Python API's and the
pipeline cells' way to silence it; ``--quiet`` on the command line), None a bar
when stderr is a terminal and lines when it is not.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm


def mode(progress: bool | None) -> str:
    """``"bar"``, ``"lines"`` or ``"off"`` for a ``progress`` setting (see the module)."""
    if progress is False:
        return "off"
    return "bar" if progress or sys.stderr.isatty() else "lines"


def line(text: str) -> None:
    """One progress line on stderr, flushed: a log read while the run goes on shows it."""
    print(text, file=sys.stderr, flush=True)


class Progress:
    """Progress of one phase: a tqdm bar, or log lines on stderr, or nothing.

    ``update`` counts units (steps, rows); in lines mode it logs one line per tenth
    of ``total`` and the last, unless ``per_tenth`` is off. ``epoch_end`` logs one
    line per epoch in lines mode (a bar shows the epoch's figures as its postfix).
    """

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str,
        progress: bool | None,
        *,
        initial: int = 0,
        per_tenth: bool = True,
    ) -> None:
        self.desc, self.total, self.unit = desc, max(total, 1), unit
        self.mode = mode(progress)
        self.per_tenth = per_tenth
        self.done = initial
        self.logged_tenths = self.done * 10 // self.total
        self.start = self.epoch_start = time.perf_counter()
        self.accuracy: float | None = None
        self.bar: Any = None
        if self.mode == "bar":
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False)

    def update(self, count: int = 1, note: str = "") -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            if note:
                self.bar.set_postfix_str(note, refresh=False)
        elif self.mode == "lines" and self.per_tenth:
            tenths = self.done * 10 // self.total
            if tenths > self.logged_tenths or self.done >= self.total:
                self.logged_tenths = tenths
                seconds = time.perf_counter() - self.start
                extra = f", {note}" if note else ""
                line(
                    f"{self.desc}: {self.done}/{self.total} {self.unit} "
                    f"({self.done / self.total:.0%}{extra}, {seconds:.1f} s)"
                )

    def set_postfix(self, **values: str) -> None:
        """tqdm's postfix on a bar; ignored otherwise (``epoch_end`` logs the figures)."""
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def evaluated(self, accuracy: float) -> None:
        """The test accuracy of the epoch that is ending: on the bar, and in its line."""
        self.accuracy = accuracy
        self.set_postfix(acc=f"{accuracy:.3f}")

    def epoch_end(self, epoch: int, epochs: int, loss: float | None = None) -> None:
        """Epoch ``epoch`` (counted from 1) of ``epochs`` ended: its line, off a terminal."""
        now = time.perf_counter()
        if self.mode == "lines":
            figures = [] if loss is None else [f"loss {loss:.3g}"]
            if self.accuracy is not None:
                figures.append(f"test acc {self.accuracy:.1%}")
            figures.append(f"{now - self.epoch_start:.1f} s")
            line(f"{self.desc} epoch {epoch}/{epochs}: {', '.join(figures)}")
        self.epoch_start, self.accuracy = now, None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
