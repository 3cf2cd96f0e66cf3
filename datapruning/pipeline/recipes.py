"""The student grid of a pipeline config: the subset and the training settings of each student.

A student recipe is one student run: a kept fraction, a selection strategy (or ``rs2``:
a fresh random subset of that fraction every epoch; or ``infobatch``: all the
data pruned by loss during training, with a ``prune`` value instead of a
fraction; or ``short``: all the data for the fraction's share of the full-data
steps), whether it distils from the full-data teacher, a seed, and a budget
(``epochs``: the config's epochs over the subset; ``steps``: as many steps as
the full-data run). Prefect flows iterate these;
the library can run them without Prefect. What a recipe trains on and with
which settings (:func:`student_train`, :meth:`StudentRecipe.indices`) decides
what the run computes, so this module is part of the source the cache keys hash
(:func:`datapruning.pipeline.keys.source_hash`); the rest of the pipeline only
orchestrates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from datapruning._sections import derive
from datapruning.config import (
    INFOBATCH_STRATEGY,
    RS2_STRATEGY,
    SHORT_STRATEGY,
    DataConfig,
    GradualMagnitude,
    PipelineConfig,
    TrainConfig,
)
from datapruning.errors import DataPruningError
from datapruning.pipeline.data import full_steps
from datapruning.report import FULL_RECIPE
from datapruning.scores import Scores, select_positions
from datapruning.train.settings import DynamicsConfig


@dataclass(frozen=True)
class StudentRecipe:
    """One student of the grid: what it trains on, with or without KD, its seed and budget."""

    fraction: float
    strategy: str
    kd: bool
    seed: int
    metric: str
    # A sweep's sparsity target for the student (None: the config's train.sparsity as is).
    sparsity: float | None = None
    # InfoBatch's prune value (its recipes keep all the data: fraction 1).
    prune: float | None = None
    # epochs: the config's epochs over the subset; steps: the full-data run's step count.
    budget: str = "epochs"

    @property
    def label(self) -> str:
        """What the subset is: ``random``, ``rs2``, or metric and strategy such as ``el2n-hard``;
        a sparse student of a sweep adds its target: ``el2n-hard-sp0.5``."""
        base = self.strategy if not self.needs_scores else f"{self.metric}-{self.strategy}"
        if self.is_infobatch:
            base = f"{self.strategy}-p{self.prune:g}"
        if self.is_short:
            base = f"{FULL_RECIPE}-{SHORT_STRATEGY}"
        return base + (f"-sp{self.sparsity:g}" if self.sparsity else "")

    @property
    def run_name(self) -> str:
        fraction = "" if self.is_infobatch else f"-f{self.fraction:g}"
        steps = "-steps" if self.budget == "steps" else ""
        return f"{self.label}{fraction}{steps}{'-kd' if self.kd else ''}-s{self.seed}"

    @property
    def needs_scores(self) -> bool:
        return self.strategy not in ("random", RS2_STRATEGY, INFOBATCH_STRATEGY, SHORT_STRATEGY)

    @property
    def is_short(self) -> bool:
        return self.strategy == SHORT_STRATEGY

    def steps(self, full_steps: int) -> int | None:
        """The step budget given the full-data run's steps (None: the config's epochs)."""
        if self.is_short:
            return max(1, round(self.fraction * full_steps))
        return full_steps if self.budget == "steps" else None

    @property
    def is_infobatch(self) -> bool:
        return self.strategy == INFOBATCH_STRATEGY

    @property
    def is_rs2(self) -> bool:
        return self.strategy == RS2_STRATEGY

    def data(self) -> DataConfig:
        """The loop's data mode for an RS2 or InfoBatch recipe (fixed subsets pass indices instead)."""
        if self.is_infobatch:
            return DataConfig(mode="infobatch", prune=self.prune)
        return DataConfig(mode="rs2", fraction=self.fraction) if self.is_rs2 else DataConfig()

    def indices(self, num_train: int, scores: Scores | None) -> np.ndarray | None:
        """The training-set indices this recipe keeps (None for RS2: all, drawn per epoch)."""
        if self.is_rs2 or self.is_infobatch or self.is_short:
            return None
        if not self.needs_scores:
            return select_positions(np.zeros(num_train), self.fraction, "random", self.seed)
        if scores is None:
            raise ValueError(f"recipe {self.run_name} needs scores")
        return scores.select(self.fraction, self.strategy, self.seed)


def full_run_name(seed: int) -> str:
    return f"{FULL_RECIPE}-s{seed}"


def teacher_train(
    cfg: PipelineConfig, seed: int, record: DynamicsConfig | None = None
) -> TrainConfig:
    """The training settings of the full-data run of ``seed`` (the baseline and KD teacher);
    ``record``: the dynamics it records (None: the config's ``train.record``), which
    ``scoring.source: runs`` turns on (datapruning.pipeline.recorded.recording)."""
    # The full-data reference and teacher is dense: train.sparsity is for the students.
    update: dict[str, Any] = {"seed": seed, "sparsity": GradualMagnitude()}
    if record is not None:
        update["record"] = record
    return derive(cfg.train, **update)


def student_train(cfg: PipelineConfig, recipe: StudentRecipe) -> TrainConfig:
    """The training settings of ``recipe``'s student: its seed, data mode, steps and sparsity."""
    update: dict[str, Any] = {"seed": recipe.seed, "data": recipe.data()}
    if recipe.is_short or recipe.budget == "steps":
        update["steps"] = recipe.steps(full_steps(cfg))
    if recipe.sparsity is not None:  # a sweep's target: gradual magnitude (checked at load)
        sparsity = derive(cfg.train.sparsity, target=recipe.sparsity)
        update["sparsity"] = sparsity if sparsity.enabled else GradualMagnitude()
    return derive(cfg.train, **update)


def student_recipes(
    cfg: PipelineConfig,
    metrics: list[str] | None = None,
    sparsities: list[float | None] | None = None,
) -> list[StudentRecipe]:
    """The students grid, for each metric (default: scoring.metric) and sparsity target.

    Recipes that do not read the scores (random, RS2) are the same for every
    metric and appear once.
    """
    students = cfg.students
    recipes = {
        recipe.run_name: recipe
        for metric in metrics or [cfg.scoring.metric]
        for sparsity in sparsities or [None]
        for grid_fraction in students.fractions
        for strategy in students.strategies
        # InfoBatch's recipes repeat for every grid fraction; the dict keeps one of each.
        for fraction, prune in _fractions(strategy, grid_fraction, students.prune)
        for kd in students.kd
        for seed in students.seeds
        # InfoBatch and short runs set their own length: one budget (the dict keeps one).
        for budget in students.budgets
        for recipe in [
            StudentRecipe(
                fraction,
                strategy,
                kd,
                seed,
                metric,
                sparsity,
                prune,
                budget if strategy not in (INFOBATCH_STRATEGY, SHORT_STRATEGY) else "epochs",
            )
        ]
    }
    return list(recipes.values())


def _fractions(
    strategy: str, fraction: float, prunes: list[float]
) -> list[tuple[float, float | None]]:
    """(fraction, prune) of a strategy's recipes: InfoBatch keeps all data, once per prune value."""
    if strategy == INFOBATCH_STRATEGY:
        return [(1.0, prune) for prune in prunes]
    return [(fraction, None)]


def check_pipeline_config(cfg: PipelineConfig) -> None:
    """Refuse the ``train``-only settings that ``run`` would otherwise ignore."""
    if cfg.train.data.mode != "full":
        raise DataPruningError(
            f"train.data.mode is {cfg.train.data.mode}; `run` takes each student's data from "
            "the students grid, so set train.data.mode: full (train.data is for `train`)"
        )
    if cfg.kd.teacher is not None or cfg.kd.teacher_logits is not None:
        raise DataPruningError(
            "`run` distils from the full-data runs it trains; drop kd.teacher and "
            "kd.teacher_logits (they are for `train`)"
        )
