"""The training loop core, its algorithms, the run spec and the settings.

``datapruning.train(dataset, model, cfg)`` trains one model: the package itself
is callable and calls :func:`datapruning.train.loop.train` (so the name works
whether Python finds the package or the function first), and
``from datapruning.train import train`` gives that function. The loop's parts:
:mod:`~datapruning.train.run` resolves a run (:func:`~datapruning.train.run.resolve_run`),
:mod:`~datapruning.train.loop` trains it (:func:`~datapruning.train.loop.train_run`),
:mod:`~datapruning.train.settings` holds the config sections. Nothing heavy is
imported until the function is called.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datapruning.train.loop import TrainResult
    from datapruning.train.loop import train as train


class _CallablePackage(types.ModuleType):
    """This package, callable as :func:`datapruning.train.loop.train`."""

    def __call__(self, *args: Any, **kwargs: Any) -> TrainResult:
        from datapruning.train.loop import train

        return train(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "train":
        from datapruning.train.loop import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


sys.modules[__name__].__class__ = _CallablePackage
