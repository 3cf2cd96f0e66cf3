"""When a cell is retried, and how a cell that failed for good is recorded.

A sweep of many cells should finish the cells it can: a transient error (I/O,
a lost worker) is retried, bad input fails at once, and a cell that fails for
good leaves a record the report lists with its error in one line, while every
other cell goes on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from datapruning._io import write_json
from datapruning.errors import DataPruningError
from datapruning.pipeline.recipes import StudentRecipe
from datapruning.report import FAILURE_NAME


class Failure(str):
    """Why a cell failed for good, in one line (a cell's result is never one)."""


def is_transient(exc: BaseException) -> bool:
    """Errors worth a retry: I/O and connection trouble, a lost worker; not bad input."""
    if isinstance(exc, DataPruningError):
        return False
    if isinstance(exc, OSError | TimeoutError | ConnectionError | MemoryError):
        return True
    # distributed.KilledWorker, CommClosedError: named, not imported (Dask is optional).
    return type(exc).__name__ in {"KilledWorker", "CommClosedError", "StreamClosedError"}


def describe_error(exc: BaseException | None) -> str:
    if exc is None:
        return "failed"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failed_record(run: str, recipe: str, error: str, **fields: Any) -> dict[str, Any]:
    """The result record of a run that failed for good (``fields``: the cell's own, such as
    its experiment, kept fraction, KD and seed)."""
    return {
        "run": run,
        "recipe": recipe,
        **fields,
        "status": "failed",
        "final_test_acc": math.nan,
        "train_seconds": math.nan,
        "end_to_end_seconds": math.nan,
        "error": error,
    }


def record_failure(run_dir: Path, recipe: StudentRecipe, error: str) -> dict[str, Any]:
    """Mark a student cell that failed for good; the report lists it with its error."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"run": recipe.run_name, "recipe": recipe.label, "error": error}
    write_json(run_dir / FAILURE_NAME, record)
    # A summary left by an earlier run of this cell is not this run's result.
    (run_dir / "summary.json").unlink(missing_ok=True)
    return failed_record(
        recipe.run_name,
        recipe.label,
        error,
        kept=recipe.fraction,
        kd=recipe.kd,
        seed=recipe.seed,
    )
