import numpy as np
import pandas as pd
import pytest

from datapruning.config import PipelineConfig
from datapruning.pipeline.recipes import StudentRecipe, student_recipes
from datapruning.scores import Scores


def test_grid_is_every_fraction_strategy_kd_and_seed():
    cfg = PipelineConfig.model_validate(
        {
            "students": {
                "fractions": [0.3, 0.5],
                "strategies": ["hard", "rs2"],
                "kd": [False, True],
                "seeds": [0, 1, 2],
            }
        }
    )
    recipes = student_recipes(cfg)
    assert len(recipes) == 2 * 2 * 2 * 3
    assert len({r.run_name for r in recipes}) == len(recipes)


def test_fixed_subset_recipes_select_their_indices():
    scores = Scores(pd.DataFrame({"index": np.arange(10), "score": np.arange(10.0), "label": 0}))
    hard = StudentRecipe(0.3, "hard", kd=True, seed=0, metric="el2n")
    assert (hard.label, hard.run_name, hard.needs_scores) == (
        "el2n-hard",
        "el2n-hard-f0.3-kd-s0",
        True,
    )
    assert hard.indices(10, scores).tolist() == [7, 8, 9]
    assert hard.data().mode == "full"
    with pytest.raises(ValueError, match="needs scores"):
        hard.indices(10, None)
    random = StudentRecipe(0.5, "random", kd=False, seed=1, metric="el2n")
    assert not random.needs_scores
    assert len(random.indices(10, None)) == 5


def test_rs2_recipe_trains_on_all_indices_with_a_fresh_draw_per_epoch():
    rs2 = StudentRecipe(0.1, "rs2", kd=False, seed=0, metric="el2n")
    assert (rs2.label, rs2.run_name, rs2.needs_scores) == ("rs2", "rs2-f0.1-s0", False)
    assert rs2.indices(100, None) is None
    data = rs2.data()
    assert (data.mode, data.fraction, data.replacement) == ("rs2", 0.1, False)


def test_infobatch_students_take_the_prune_values_instead_of_fractions():
    cfg = PipelineConfig.model_validate(
        {
            "students": {
                "fractions": [0.3, 0.5],
                "strategies": ["random", "infobatch"],
                "prune": [0.3, 0.7],
                "kd": [True],
                "seeds": [0],
            }
        }
    )
    names = [r.run_name for r in student_recipes(cfg)]
    assert names == [
        "random-f0.3-kd-s0",
        "infobatch-p0.3-kd-s0",
        "infobatch-p0.7-kd-s0",
        "random-f0.5-kd-s0",
    ]
    recipe = StudentRecipe(1.0, "infobatch", kd=True, seed=0, metric="el2n", prune=0.7)
    assert not recipe.needs_scores  # no scores read, none charged
    assert recipe.indices(100, None) is None
    data = recipe.data()
    assert (data.mode, data.prune, data.anneal) == ("infobatch", 0.7, 0.125)


def test_prune_values_are_checked():
    with pytest.raises(ValueError, match=r"prune 1\.0"):
        PipelineConfig.model_validate({"students": {"prune": [1.0]}})


def test_short_recipe_trains_all_the_data_for_its_share_of_the_full_steps():
    short = StudentRecipe(0.3, "short", kd=True, seed=2, metric="el2n")
    assert (short.label, short.run_name, short.needs_scores) == (
        "full-short",
        "full-short-f0.3-kd-s2",
        False,
    )
    assert short.indices(100, None) is None
    assert short.data().mode == "full"
    assert short.steps(1000) == 300
    assert StudentRecipe(0.001, "short", kd=False, seed=0, metric="el2n").steps(100) == 1


def test_step_budget_gives_subsets_the_full_data_step_count_once_per_recipe():
    cfg = PipelineConfig.model_validate(
        {
            "students": {
                "fractions": [0.3],
                "strategies": ["hard", "rs2", "short", "infobatch"],
                "kd": [False],
                "seeds": [0],
                "budgets": ["epochs", "steps"],
            }
        }
    )
    names = sorted(recipe.run_name for recipe in student_recipes(cfg))
    # InfoBatch and short runs set their own length: no step-budget twin.
    assert names == [
        "el2n-hard-f0.3-s0",
        "el2n-hard-f0.3-steps-s0",
        "full-short-f0.3-s0",
        "infobatch-p0.5-s0",
        "rs2-f0.3-s0",
        "rs2-f0.3-steps-s0",
    ]
    by_name = {recipe.run_name: recipe for recipe in student_recipes(cfg)}
    assert by_name["el2n-hard-f0.3-steps-s0"].steps(600) == 600
    assert by_name["el2n-hard-f0.3-s0"].steps(600) is None


def test_budgets_and_strategies_are_checked():
    with pytest.raises(ValueError, match="budgets"):
        PipelineConfig.model_validate({"students": {"budgets": ["minutes"]}})
    with pytest.raises(ValueError, match="budgets"):
        PipelineConfig.model_validate({"students": {"budgets": []}})
