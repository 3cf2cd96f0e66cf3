"""The experiments of a pipeline config: one dataset x model each, with its students.

A config without a ``sweep`` section is one experiment; a sweep lists datasets,
models, metrics and sparsity targets, and each dataset x model becomes an
experiment in its own directory with its own teachers, scores, students and
report. Bad grids fail here, before a runner starts or a file is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datapruning._sections import derive
from datapruning.config import PipelineConfig, SweepDatasetConfig
from datapruning.errors import DataPruningError
from datapruning.pipeline.recipes import StudentRecipe, check_pipeline_config, student_recipes
from datapruning.pipeline.recorded import from_runs, recording
from datapruning.train.settings import DynamicsConfig


@dataclass(frozen=True)
class Experiment:
    """One dataset x model of a sweep: its teachers, scores, students and report."""

    cfg: PipelineConfig
    metrics: tuple[str, ...]
    sparsities: tuple[float | None, ...]

    @property
    def root(self) -> Path:
        return self.cfg.run_root

    @property
    def recipes(self) -> list[StudentRecipe]:
        return student_recipes(self.cfg, list(self.metrics), list(self.sparsities))

    @property
    def teacher_seeds(self) -> list[int]:
        # Every seed gets its full-data run: the report's baseline, and the KD teacher.
        return sorted(set(self.cfg.students.seeds))

    @property
    def scored_metrics(self) -> list[str]:
        """The metrics some student trains on (random and RS2 students read none)."""
        used = {recipe.metric for recipe in self.recipes if recipe.needs_scores}
        return [metric for metric in self.metrics if metric in used]

    @property
    def recorded_metrics(self) -> list[str]:
        """The scored metrics whose scores the full-data runs record (``scoring.source: runs``)."""
        return [metric for metric in self.scored_metrics if from_runs(self.cfg, metric)]

    @property
    def record(self) -> DynamicsConfig | None:
        """What the experiment's full-data runs record (None: the config's ``train.record``)."""
        return recording(self.cfg, self.scored_metrics)


def experiments(cfg: PipelineConfig) -> list[Experiment]:
    """The sweep's experiments: every dataset x model (one, without a sweep section).

    With several, each lives in ``output_dir/name/<dataset>-<model>``.
    """
    check_pipeline_config(cfg)
    sweep = cfg.sweep
    datasets = sweep.datasets or [cfg.dataset]
    models = sweep.models or [cfg.model]
    metrics = tuple(sweep.metrics or [cfg.scoring.metric])
    sparsities: tuple[float | None, ...] = tuple(sweep.sparsity or [None])
    several = len(datasets) * len(models) > 1
    found = []
    for dataset in datasets:
        for model in models:
            update: dict[str, Any] = {"dataset": dataset, "model": model}
            own_metrics = metrics
            if isinstance(dataset, SweepDatasetConfig):
                update |= {"dataset": dataset.plain(), **cfg.sections_for(dataset)}
                own_metrics = tuple(dataset.metrics or metrics)
            if several:
                name = _slug(f"{dataset.name}-{model.name or 'default'}")
                if isinstance(dataset, SweepDatasetConfig) and dataset.label:
                    name = dataset.label + (
                        "" if len(models) == 1 else f"-{_slug(str(model.name))}"
                    )
                update |= {"output_dir": cfg.run_root, "name": name}
            found.append(Experiment(derive(cfg, **update), own_metrics, sparsities))
    roots = [str(exp.root) for exp in found]
    if len(set(roots)) != len(roots):
        raise DataPruningError(
            "two sweep experiments share a run directory (same dataset and model name); "
            "list each dataset x model once"
        )
    return found


def is_sweep(cfg: PipelineConfig) -> bool:
    return any(value is not None for value in cfg.sweep.model_dump().values())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "experiment"
