"""Pruning metrics behind a name registry.

Each metric is a function ``score(dataset, cfg, ...) -> Scores`` where larger
scores mean harder / more informative examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datapruning.errors import UnknownNameError

# Names map to "module:function" so that listing metrics imports no torch code.
METRICS: dict[str, str] = {
    "el2n": "datapruning.scoring.el2n:score_el2n",
}


def get_metric(name: str) -> Callable[..., Any]:
    import importlib

    try:
        target = METRICS[name]
    except KeyError:
        raise UnknownNameError("metric", name, METRICS) from None
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


__all__ = ["METRICS", "get_metric"]
