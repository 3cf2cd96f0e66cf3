"""The pipeline's students grid with InfoBatch students: all data, no scores, the teacher charged."""

from __future__ import annotations

import json

import pytest

from datapruning.config import parse_config
from datapruning.pipeline import grid, train_cells

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "name": "tiny-infobatch",
    "dataset": {"name": "mnist1d", "params": {"num_samples": 400}},
    "model": {"name": "convnet1d", "params": {"channels": 8}},
    "train": {"epochs": 3, "batch_size": 50, "targets": [0.2]},
    "scoring": {"metric": "el2n", "seeds": 2, "epochs": 1, "ensemble_size": 1},
    "students": {"strategies": ["infobatch"], "prune": [0.5], "kd": [True], "seeds": [0]},
}


def test_infobatch_student_reads_no_scores_and_pays_the_teacher(tmp_path):
    cfg = parse_config(TINY | {"output_dir": str(tmp_path)})
    (exp,) = grid.experiments(cfg)
    assert [r.run_name for r in exp.recipes] == ["infobatch-p0.5-kd-s0"]
    assert exp.scored_metrics == []  # nothing to score for it
    teacher = train_cells.run_teacher(exp.cfg, 0)
    record = train_cells.run_student(exp.cfg, exp.recipes[0], None, teacher)
    assert record["status"] == "trained"
    summary = json.loads((exp.root / "infobatch-p0.5-kd-s0" / "summary.json").read_text())
    assert summary["data_mode"] == "infobatch"
    assert summary["scoring_seconds"] == 0.0
    assert summary["teacher_seconds"] == teacher["train_seconds"]
    assert summary["cost"]["prune"] == 0.5
    assert summary["cost"]["backward_fraction"] < 1
    again = train_cells.run_student(exp.cfg, exp.recipes[0], None, teacher)
    assert again["status"] == "reused"
