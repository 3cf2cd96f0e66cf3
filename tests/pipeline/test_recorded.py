"""scoring.source: runs — the full-data runs record the scores, no scoring cell trains a model.

A tiny grid runs through the pipeline's cells flow: the scores of el2n come from the
full-data runs of both seeds (their mean, with provenance), every student of a
score-based strategy starts only after those runs finished, nothing of the scoring
ensemble is called, and each student is charged the recording seconds alone.
"""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest

import datapruning.scoring as scoring
from datapruning.config import parse_config
from datapruning.errors import DataPruningError
from datapruning.pipeline import grid, keys, recorded, score_cells, train_cells
from datapruning.scores import Scores

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "name": "tiny-runs",
    "dataset": {"name": "mnist1d", "params": {"num_samples": 400}},
    "model": {"name": "convnet1d", "params": {"channels": 8}},
    "train": {"epochs": 3, "batch_size": 50, "targets": [0.2]},
    "scoring": {"metric": "el2n", "source": "runs"},
    "students": {
        "fractions": [0.5],
        "strategies": ["random", "hard"],
        "kd": [False, True],
        "seeds": [0, 1],
    },
}


def config(tmp_path, **changes):
    return parse_config(json.loads(json.dumps(TINY)) | {"output_dir": str(tmp_path)} | changes)


def test_runs_record_only_what_can_be_recorded_and_change_only_the_full_runs_keys(tmp_path):
    cfg = config(tmp_path, sweep={"metrics": ["el2n", "forgetting", "grand"]})
    (exp,) = grid.experiments(cfg)
    # grand cannot be recorded by a run: it keeps its own scoring cells.
    assert exp.recorded_metrics == ["el2n", "forgetting"]
    assert exp.record.forgetting and not exp.record.aum
    assert exp.record.el2n_epochs == [1, 2, 3]  # 1/6, 1/3, 2/3 and all of 3 epochs
    # The bench's recording (30 epochs: passes after 5, 10, 20 and 30) is the default.
    assert recorded.el2n_epochs(30) == [5, 10, 20, 30]
    assert keys.teacher_key(exp.cfg, 0, exp.record) != keys.teacher_key(exp.cfg, 0)
    ensemble = grid.experiments(config(tmp_path, scoring={"metric": "el2n"}))[0]
    assert ensemble.record is None and ensemble.recorded_metrics == []


def test_scoring_alone_refuses_scores_that_come_from_runs(tmp_path):
    from datapruning.flows.queue import CellQueue, add_scoring

    with pytest.raises(DataPruningError, match=r"scoring\.source is runs: el2n's scores"):
        add_scoring(CellQueue(None), 0, config(tmp_path), "el2n", {})


@pytest.mark.slow
def test_students_wait_on_the_full_runs_and_no_scoring_cell_trains(
    tmp_path, prefect_server, monkeypatch
):
    from prefect.task_runners import ThreadPoolTaskRunner

    from datapruning.flows.pipeline import cells

    def no_scoring(*args, **kwargs):
        raise AssertionError("a scoring cell trained scoring models")

    for name in ("score_group", "prepare_shards", "score_shard", "merge_scores"):
        monkeypatch.setattr(score_cells, name, no_scoring)
    monkeypatch.setattr(scoring, "score", no_scoring)
    monkeypatch.setattr(scoring, "prepare", no_scoring)

    cfg = config(tmp_path)
    root = cfg.run_root
    lock, started = threading.Lock(), []
    run_student = train_cells.run_student

    def student(cfg, recipe, scores, teacher, *, refresh=False):
        with lock:  # what was finished when this student started
            finished = {s: (root / f"full-s{s}" / "summary.json").is_file() for s in (0, 1)}
            started.append((recipe, finished, scores))
        return run_student(cfg, recipe, scores, teacher, refresh=refresh)

    monkeypatch.setattr(train_cells, "run_student", student)
    result = cells.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))(cfg, retries=0)
    assert result["counts"] == {"trained": 10, "reused": 0, "failed": 0}

    scored = [(recipe, finished, scores) for recipe, finished, scores in started if scores]
    assert len(scored) == 4  # el2n-hard, with and without KD, seeds 0 and 1
    for recipe, finished, scores in scored:
        assert recipe.needs_scores and finished == {0: True, 1: True}, recipe.run_name
        assert scores["source"] == "runs"
    assert not (root / "scores" / "el2n.parquet.parts").exists()
    check_scores_and_charges(root)

    # A rerun reuses every run and the scores file.
    again = cells.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))(cfg, retries=0)
    assert again["counts"] == {"trained": 0, "reused": 10, "failed": 0}


def check_scores_and_charges(root):
    """The scores: the mean of what full-s0 and full-s1 recorded, with their provenance."""
    table = Scores.load(root / "scores" / "el2n.parquet")
    per_run = [Scores.load(root / f"full-s{s}" / "scores-el2n.parquet") for s in (0, 1)]
    np.testing.assert_allclose(table.values, (per_run[0].values + per_run[1].values) / 2)
    assert table.metadata["source"] == "runs" and table.metadata["seeds"] == [0, 1]
    assert [run["dir"] for run in table.metadata["runs"]] == [
        str(root / "full-s0"),
        str(root / "full-s1"),
    ]
    assert table.metadata["params"]["after_epochs"] == [1, 2, 3]

    # A student is charged the recording seconds alone: the runs' EL2N passes.
    passes = sum(
        json.loads((root / f"full-s{s}" / "summary.json").read_text())["dynamics"][
            "seconds_outside_training"
        ]
        for s in (0, 1)
    )
    assert math.isclose(table.metadata["seconds"], passes)
    hard = json.loads((root / "el2n-hard-f0.5-s0" / "summary.json").read_text())
    assert math.isclose(hard["scoring_seconds"], passes)
    assert hard["scores"]["source"] == "runs"
    random = json.loads((root / "random-f0.5-s0" / "summary.json").read_text())
    assert random["scoring_seconds"] == 0.0 and "scores" not in random
