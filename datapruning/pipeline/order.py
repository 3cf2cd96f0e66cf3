"""Which ready cell of a sweep goes to a runner first.

Sent in the order they were built, cells queue first come, first served: on
Dask with 2 workers a 0.1 s merge of scores waited behind two students of 20 s
while six students waited for it (bench/orchestration.py, a profile at stop 12).
A cell's priority (lower first) puts a merge of scores first (quick, and every
student of that metric waits for it), then teachers (largest experiment first)
and scoring groups (students wait for them), then students, most work first: a
sweep then ends on short cells, not with one worker training the longest while
the others idle. A cell's work is counted in full-data steps of its experiment,
so cells of experiments of different sizes compare.
"""

from __future__ import annotations

from datapruning.pipeline.recipes import StudentRecipe

Priority = tuple[float, ...]

MERGE: Priority = (0,)
SCORING: Priority = (2,)
_TEACHER, _STUDENT = 1, 3


def teacher_priority(full_steps: int) -> Priority:
    """A teacher of an experiment whose full-data run takes ``full_steps`` steps."""
    return (_TEACHER, -full_steps)


def student_priority(recipe: StudentRecipe, full_steps: int) -> Priority:
    """A student of an experiment whose full-data run takes ``full_steps`` steps."""
    return (_STUDENT, -expected_cost(recipe) * full_steps)


def expected_cost(recipe: StudentRecipe) -> float:
    """A student's training work relative to its experiment's full-data run."""
    examples = 1 - recipe.prune / 2 if recipe.is_infobatch and recipe.prune else recipe.fraction
    if recipe.budget == "steps":
        examples = 1.0
    return examples * (1.1 if recipe.kd else 1.0)  # the teacher's forward pass, roughly
