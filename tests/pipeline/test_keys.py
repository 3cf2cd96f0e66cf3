"""What the cache keys' source hash reads: the modules that compute, not those that orchestrate."""

from __future__ import annotations

from pathlib import Path

import datapruning
from datapruning.pipeline import keys

PACKAGE = Path(datapruning.__file__).parent


def hashed(relative: str) -> bool:
    assert (PACKAGE / relative).is_file(), relative
    return keys._computes(relative)


def test_the_cli_report_and_orchestrating_pipeline_modules_are_left_out():
    assert not hashed("cli.py")
    assert not hashed("report/markdown.py")
    for path in sorted((PACKAGE / "pipeline").glob("*.py")):
        # The recipes decide each student's subset and settings: editing them retrains.
        assert hashed(f"pipeline/{path.name}") == (path.name == "recipes.py"), path.name


def test_the_modules_that_compute_are_hashed():
    for relative in ("train/loop.py", "scoring/el2n.py", "data/samplers.py", "config.py"):
        assert hashed(relative)
    assert len(keys.source_hash()) == 16


# --- one definition of "the same run" -------------------------------------------------------

BASE = {
    "dataset": {"name": "digits"},
    "train": {"epochs": 2, "threads": 1},
    "students": {"fractions": [0.5], "strategies": ["random", "hard", "rs2"], "kd": [False, True]},
}


def grid_keys(overrides: dict) -> dict[str, str]:
    """Every cell's cache key: teachers, scores and students (inputs faked by their hashes)."""
    from datapruning.config import parse_config
    from datapruning.pipeline.recipes import student_recipes

    raw = {**BASE, **{k: {**BASE.get(k, {}), **v} for k, v in overrides.items()}}
    cfg = parse_config(raw)
    found = {"teacher": keys.teacher_key(cfg, 0), "scores": keys.scores_key(cfg, "el2n")}
    found["scores-proto"] = keys.scores_key(cfg, "proto")
    scores, teacher = {"hash": "scores-hash"}, {"checkpoint_hash": "teacher-hash"}
    for recipe in student_recipes(cfg):
        found[recipe.run_name] = keys.student_key(cfg, recipe, scores, teacher)
    return found


def test_changing_train_workers_reuses_every_cell():
    from datapruning.train.run import NOT_COMPUTING

    assert {"workers", "checkpoint_every"} <= NOT_COMPUTING  # one list, run key and cache
    assert grid_keys({}) == grid_keys({"train": {"workers": 2, "checkpoint_every": 7}})


def test_changing_kd_temperature_retrains_only_the_kd_students():
    from datapruning.config import parse_config
    from datapruning.pipeline.recipes import student_recipes

    before, after = grid_keys({}), grid_keys({"kd": {"temperature": 2.0}})
    kd = {r.run_name for r in student_recipes(parse_config(BASE)) if r.kd}
    assert kd and {name for name in before if before[name] != after[name]} == kd


def test_threads_change_results_so_they_key_the_cells():
    # Measured: convnet1d on MNIST-1D, 2 epochs, threads 1 vs 2: weights differ in their
    # last bits, so a cached cell of one is not the other's.
    assert grid_keys({})["teacher"] != grid_keys({"train": {"threads": 2}})["teacher"]


def test_a_proto_encoder_file_keys_the_scores_by_its_contents(tmp_path):
    encoder = tmp_path / "encoder.pt"
    encoder.write_bytes(b"first")
    params = {"scoring": {"params": {"proto": {"encoder": str(encoder)}}}}
    first = grid_keys(params)
    assert grid_keys(params) == first
    encoder.write_bytes(b"retrained")  # the same path, another encoder
    again = grid_keys(params)
    assert again["scores-proto"] != first["scores-proto"]
    assert {k: v for k, v in again.items() if k != "scores-proto"} == {
        k: v for k, v in first.items() if k != "scores-proto"
    }
