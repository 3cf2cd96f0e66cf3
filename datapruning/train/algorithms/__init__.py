"""The optional parts of training, one file each, behind one registry.

:data:`ALGORITHMS` maps a name to a factory that builds the algorithm for a
resolved run, or returns None when the run's settings leave it off. The loop
(:mod:`datapruning.train.loop`) imports none of them: it calls whatever
:func:`build_algorithms` returned, at the events of
:class:`~datapruning.train.algorithms.base.Algorithm`. The order here is the
order they are built and called in (KD replaces the loss before online
selection scores with it; the pruner runs after the step before InfoBatch
records its losses).

Adding an algorithm is one file with an :class:`Algorithm` subclass and a
``build(run)`` factory, and one entry here.
"""

from __future__ import annotations

from typing import Any

from datapruning.train.algorithms import dynamics, infobatch, kd, online, pruning
from datapruning.train.algorithms.base import Algorithm, Factory, Trainer, overriding

__all__ = ["ALGORITHMS", "Algorithm", "Factory", "Trainer", "build_algorithms", "overriding"]

ALGORITHMS: dict[str, Factory] = {
    "kd": kd.build,
    "pruning": pruning.build,
    "infobatch": infobatch.build,
    "online": online.build,
    "dynamics": dynamics.build,
}


def build_algorithms(run: Any) -> list[Algorithm]:
    """The algorithms ``run``'s settings turn on, in registry order."""
    built = [factory(run) for factory in ALGORITHMS.values()]
    return [algorithm for algorithm in built if algorithm is not None]
