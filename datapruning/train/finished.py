"""A finished run is a user's result: kept when asked for again, never silently replaced.

``datapruning train CONFIG --out DIR`` on a DIR that holds a finished run
(``summary.json``) compares that run's key (``config_hash``: what it computed
from, :func:`datapruning.train.run.run_key`) with the key of the run about to
start. The same key: the run is reported as finished and kept (nothing is
retrained). Another key: the command is refused with one line naming the first
setting that differs (:func:`first_difference`), unless ``--force``, which
says what it replaces. Settings that do not change what a run computes
(:data:`~datapruning.train.run.NOT_COMPUTING`) are in neither key, so a rerun
with more workers reuses the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datapruning.errors import DataPruningError
from datapruning.train.run import NOT_COMPUTING, Run, describe
from datapruning.train.summary import SUMMARY_NAME, check_summary_format


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of the finished run in ``run_dir``, or None when none finished there."""
    path = run_dir / SUMMARY_NAME
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataPruningError(
            f"{str(path)!r} cannot be read ({exc.__class__.__name__}); remove it or use "
            "another run directory"
        ) from None
    if not isinstance(summary, dict):
        raise DataPruningError(f"{str(path)!r} is not a run summary; use another run directory")
    check_summary_format(path, summary)
    return summary


def preview(run: Run) -> dict[str, Any]:
    """The summary fields about a resolved run's inputs, before it trains (as a finished
    run's summary.json has them, its algorithms' parts included)."""
    summary = describe(run, None, None) | {"kernels": {}, "cost": {}, "sparsity": None}
    for algorithm in run.algorithms:
        algorithm.summarize(summary)
    return summary


def first_difference(finished: dict[str, Any], run: Run) -> str:
    """The first setting in which ``run`` differs from the ``finished`` run, in words."""
    theirs, ours = _settings(finished), _settings(preview(run))
    for key in [*ours, *(k for k in theirs if k not in ours)]:
        if theirs.get(key) != ours.get(key):
            return f"{key} is {_show(theirs.get(key))} there, {_show(ours.get(key))} here"
    return "the training subset or the teacher's weights differ"


def _settings(summary: dict[str, Any]) -> dict[str, Any]:
    """What a run computes from, flattened to dotted names, in the order a user reads them."""
    config = summary.get("config") or {}
    kd = summary.get("kd") or {}
    settings: dict[str, Any] = {
        "dataset": (summary.get("dataset") or {}).get("fingerprint"),
        "model": config.get("model"),
    }
    train = {k: v for k, v in (config.get("train") or {}).items() if k not in NOT_COMPUTING}
    settings.update(_flatten("train", train))
    settings.update({f"kd.{k}": kd.get(k) for k in ("alpha", "temperature", "teacher")})
    for key in ("data_mode", "kept_fraction", "num_train_examples"):
        settings[key] = summary.get(key)
    return settings


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flatten(f"{prefix}.{key}", item))
    return flat


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)
