"""What each run is charged, and how many runs were trained, reused and failed.

A student is charged only what it used: the scores' seconds only when it trained
on the scores (the scoring ensemble's, or with ``scoring.source: runs`` only what the
full-data runs spent recording them), the teacher's training and its logits only
with KD. The report then counts both, teacher and scores, three ways (per student,
once per sweep, owned: :mod:`datapruning.report.tables`). The
teacher's logits are computed once, by the teacher's own cell, and every KD
student of that teacher is charged the same recorded seconds, so students'
end-to-end times do not depend on the order they ran in (before, the first KD
student computed and cached the logits and paid for them alone).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from datapruning.pipeline.recipes import StudentRecipe


@dataclass(frozen=True)
class Charges:
    """The seconds a student's summary counts beside its own training."""

    teacher_seconds: float
    scoring_seconds: float
    # The cached logits' recorded cost (None: the student read none, or ran the teacher online).
    teacher_logits_seconds: float | None


def student_charges(
    recipe: StudentRecipe,
    scores: dict[str, Any] | None,
    teacher: dict[str, Any] | None,
    *,
    online: bool,
) -> Charges:
    """What ``recipe``'s student is charged, given the scores and teacher records it read and
    whether it runs its teacher online (on augmented batches: it reads the checkpoint, not
    the cached logits)."""
    distils = bool(recipe.kd and teacher)
    return Charges(
        teacher_seconds=teacher["train_seconds"] if distils and teacher else 0.0,
        scoring_seconds=scores["seconds"] if recipe.needs_scores and scores else 0.0,
        # The logits file was written by the teacher's cell; every KD student of that
        # teacher is charged its recorded cost (the loop would charge 0 for a .npy).
        teacher_logits_seconds=teacher["logits_seconds"]
        if distils and teacher and not online
        else None,
    )


def tally(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many runs (teachers and students) were trained, reused and failed."""
    counts = {"trained": 0, "reused": 0, "failed": 0}
    for record in records:
        counts[record["status"]] += 1
    return counts


def describe_tally(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{total} runs: {counts['trained']} trained, {counts['reused']} reused" + (
        f", {counts['failed']} failed" if counts["failed"] else ""
    )
