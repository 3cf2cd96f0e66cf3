"""Per-dataset sweep overrides: one dataset at several sizes, each experiment with its own
directory, seeds, metrics or scoring (configs/study.yaml)."""

from __future__ import annotations

import pytest

from datapruning.config import PipelineConfig, parse_config
from datapruning.errors import ConfigError, DataPruningError
from datapruning.pipeline.data import dataset_of
from datapruning.pipeline.grid import experiments
from datapruning.pipeline.recipes import student_train


def study(tmp_path, *datasets):
    return PipelineConfig.model_validate(
        {
            "name": "study",
            "output_dir": str(tmp_path),
            "train": {"epochs": 4, "batch_size": 10},
            "students": {"fractions": [0.5], "strategies": ["random", "hard"], "seeds": [0, 1]},
            "sweep": {"metrics": ["el2n", "forgetting"], "datasets": list(datasets)},
        }
    )


def test_each_labelled_dataset_is_its_own_experiment_with_its_overrides(tmp_path):
    cfg = study(
        tmp_path,
        {"name": "digits", "label": "small"},
        {
            "name": "digits",
            "label": "one-seed",
            "metrics": ["el2n"],
            "students": {"seeds": [3]},
            "scoring": {"seeds": 1, "epochs": 2},
            "train": {"epochs": 2},
        },
    )
    small, one_seed = experiments(cfg)
    assert (small.root, one_seed.root) == (tmp_path / "study/small", tmp_path / "study/one-seed")
    assert small.metrics == ("el2n", "forgetting") and one_seed.metrics == ("el2n",)
    assert small.teacher_seeds == [0, 1] and one_seed.teacher_seeds == [3]
    assert (one_seed.cfg.scoring.seeds, one_seed.cfg.scoring.epochs) == (1, 2)
    assert (small.cfg.scoring.seeds, small.cfg.train.epochs, one_seed.cfg.train.epochs) == (4, 4, 2)
    # The rest of a section stays the config's, and the dataset carries no sweep keys.
    assert one_seed.cfg.train.batch_size == 10
    assert one_seed.cfg.dataset.model_dump() == {"name": "digits", "params": {}}


def test_short_and_step_budget_students_get_their_step_counts(tmp_path):
    cfg = study(tmp_path, {"name": "digits", "label": "a"}, {"name": "digits", "label": "b"})
    cfg.students.strategies = ["random", "short"]
    cfg.students.budgets = ["epochs", "steps"]
    exp = experiments(cfg)[0]
    by_name = {recipe.run_name: recipe for recipe in exp.recipes}
    full_steps = 4 * -(-dataset_of(exp.cfg).num_train // 10)  # 4 epochs of batch 10
    assert student_train(exp.cfg, by_name["random-f0.5-steps-s0"]).steps == full_steps
    assert student_train(exp.cfg, by_name["full-short-f0.5-s0"]).steps == round(full_steps / 2)
    assert student_train(exp.cfg, by_name["random-f0.5-s0"]).steps is None


def test_a_bad_override_names_the_dataset_and_key():
    raw = {"sweep": {"datasets": [{"name": "digits", "label": "x", "students": {"seed": [1]}}]}}
    with pytest.raises(ConfigError, match=r"sweep\.datasets\[0\] \(x\): unknown key 'seed'"):
        parse_config(raw)
    raw = {"sweep": {"datasets": [{"name": "digits", "train": {"epochs": 0}}]}}
    with pytest.raises(ConfigError, match=r"sweep\.datasets\[0\] \(digits\).*epochs"):
        parse_config(raw)
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_config({"sweep": {"datasets": [{"name": "digits", "metrics": ["el3n"]}]}})


def test_two_sizes_of_one_dataset_need_labels(tmp_path):
    cfg = study(
        tmp_path,
        {"name": "mnist1d", "params": {"num_samples": 100}},
        {"name": "mnist1d", "params": {"num_samples": 200}},
    )
    with pytest.raises(DataPruningError, match="share a run directory"):
        experiments(cfg)
