"""Shared costs three ways, teachers and scores alike, on hand-made runs whose scores the
full-data runs recorded (``scoring.source: runs``); every figure is worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from runs_helper import write_run

from datapruning.report import find_runs, tta_table, write_report
from datapruning.scores import Scores

KD = {"alpha": 0.5, "temperature": 4.0}
# The KD students' teacher, full-s0: 4 s of training and 1 s of logits.
TEACHER = {"teacher_seconds": 4.0, "teacher_logits_seconds": 1.0}
# What recording cost, summed over full-s0 and full-s1: el2n's passes 0.2 s each (outside
# the runs' training), forgetting's bookkeeping 0.15 s each (inside it).
EL2N_S, FORGETTING_S = 0.4, 0.3


def recorded_scores(root, metric, seconds, in_training):
    """``scores/<metric>.parquet`` as the pipeline writes it from the full-data runs."""
    table = pd.DataFrame({"index": np.arange(4), "score": np.ones(4), "label": np.zeros(4)})
    runs = [{"dir": str(root / f"full-s{s}"), "seed": s, "seconds": seconds / 2} for s in (0, 1)]
    metadata = {
        "metric": metric,
        "source": "runs",
        "seconds": seconds,
        "seconds_in_training": in_training,
        "runs": runs,
    }
    (root / "scores").mkdir(exist_ok=True)
    Scores(table, metadata).save(root / "scores" / f"{metric}.parquet")


@pytest.fixture
def experiment(tmp_path):
    """Full data reaches 0.75 at 3 s (both seeds): the target with a drop of 0.25.

    Readers: el2n's scores by el2n-hard and el2n-hard + KD (2), forgetting's by
    forgetting-hard (1). full-s0's KD students: el2n-hard + KD and random + KD (2).
    """
    root = tmp_path / "exp"
    for seed in (0, 1):
        write_run(root, f"full-s{seed}", [(2.0, 0.5), (4.0, 1.0)], recipe="full", seed=seed)
    recorded_scores(root, "el2n", EL2N_S, 0.0)
    recorded_scores(root, "forgetting", FORGETTING_S, FORGETTING_S)
    el2n = {"recipe": "el2n-hard", "kept": 0.5, "scoring_seconds": EL2N_S, "scores": "el2n"}
    write_run(root, "el2n-hard-s0", [(1.0, 1.0)], **el2n)
    write_run(root, "el2n-hard-kd-s0", [(1.0, 1.0)], kd=KD, **el2n, **TEACHER)
    write_run(
        root,
        "forgetting-hard-s0",
        [(2.0, 1.0)],
        recipe="forgetting-hard",
        kept=0.5,
        scoring_seconds=FORGETTING_S,
        scores="forgetting",
    )
    write_run(root, "random-kd-s0", [(1.0, 1.0)], recipe="random", kept=0.5, kd=KD, **TEACHER)
    return root


def views(row):
    return (row.e2e_student_s, row.e2e_sweep_s, row.e2e_zero_s)


def test_scores_and_teacher_are_shared_costs_counted_three_ways(experiment):
    table, target = tta_table(find_runs(experiment), 0.25)
    assert target == 0.75
    rows = {(row.recipe, bool(row.kd)): row for row in table.itertuples()}
    assert rows["full", False].tta_s == 3.0  # 2 + 0.25 / 0.5 * 2
    # el2n-hard: 1 s; the 0.4 s of recording in full, halved once per sweep (2 readers),
    # nothing owned.
    assert views(rows["el2n-hard", False]) == pytest.approx((1.4, 1.2, 1.0))
    # el2n-hard + KD: 1 s + 0.4 s scores + 5 s teacher; once per sweep 1 + 0.2 + 2.5;
    # owned: only the logits, shared by full-s0's 2 KD students, 1 + 0.5.
    assert views(rows["el2n-hard", True]) == pytest.approx((6.4, 3.7, 1.5))
    # forgetting-hard: 2 s; its only reader pays all 0.3 s per student and once per sweep.
    assert views(rows["forgetting-hard", False]) == pytest.approx((2.3, 2.3, 2.0))
    # random + KD reads no scores: the teacher alone, 1 + 5, 1 + 2.5, 1 + 0.5.
    assert views(rows["random", True]) == pytest.approx((6.0, 3.5, 1.5))
    assert rows["el2n-hard", False].e2e_sweep_speedup == pytest.approx(3.0 / 1.2)


def test_report_lists_recorded_scores_and_counts_their_passes_once(experiment):
    _, text = write_report(experiment, 0.25)
    assert "| scoring: el2n, recorded by full-s0, full-s1 | 0.40 |" in text
    assert "| scoring: forgetting, recorded by full-s0, full-s1 | 0.30 |" in text
    lines = text.splitlines()
    start = lines.index("## Where the time goes")
    header = [c.strip() for c in lines[start + 4].strip("|").split("|")]
    row = dict(
        zip(header, (c.strip() for c in lines[start + 6].strip("|").split("|")), strict=True)
    )
    # el2n's passes (0.4 s) are scoring; forgetting's bookkeeping is inside the full-data
    # runs' 8 s of training already, so it is not counted again.
    assert (row["scoring s"], row["teachers s"]) == ("0.4", "8.0")
    assert "teacher and scores counted once per sweep" in text
