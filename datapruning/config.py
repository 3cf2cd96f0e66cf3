"""Typed configuration (pydantic) and YAML loading.

Every section rejects unknown keys, so a typo in a config file is an error that
names the key rather than a silently ignored setting. Names (dataset, model,
metric, strategy) are checked against their registries when the config loads,
before any work starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from datapruning._sections import FiniteParams, Section, Seed, check_fraction, check_name
from datapruning.errors import ConfigError, describe_validation_error

# A training run's sections (model, data, sparsity, KD), re-exported: they live beside
# their code in datapruning.train.settings; this module assembles them into an experiment.
from datapruning.train.settings import ADAMW_DEFAULTS as ADAMW_DEFAULTS
from datapruning.train.settings import DataConfig as DataConfig
from datapruning.train.settings import DynamicNM as DynamicNM
from datapruning.train.settings import GradualMagnitude as GradualMagnitude
from datapruning.train.settings import KDConfig, ModelConfig, TrainConfig
from datapruning.train.settings import OneShotNM as OneShotNM
from datapruning.train.settings import SparsityConfig as SparsityConfig
from datapruning.train.settings import StepOrFraction as StepOrFraction
from datapruning.train.settings import parse_target as parse_target
from datapruning.train.settings import sparsity_config as sparsity_config


class DatasetConfig(Section):
    name: str = "mnist1d"
    params: FiniteParams = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from datapruning.data.sources import get_source
        from datapruning.errors import DataPruningError

        # A name may carry a file source's location: npz:PATH, cifar10:DIR.
        try:
            get_source(name)
        except DataPruningError as exc:
            raise ValueError(str(exc)) from None
        return name


def _metric_params_section() -> type[BaseModel]:
    """``scoring.params``: one field per registered metric, holding its own params model."""
    from datapruning.scoring.registry import METRICS

    fields: dict[str, Any] = {
        name: (metric.params_model, Field(default_factory=metric.params_model))
        for name, metric in METRICS.items()
    }
    return create_model(
        "MetricParamsSection", __config__=ConfigDict(extra="forbid", frozen=True), **fields
    )


MetricParamsSection = _metric_params_section()

# Keys that each metric's registry entry now owns: old key -> where it lives now.
_MOVED_SCORING_KEYS = {
    "grand_layer": "scoring.params.grand.layer",
    "proto": "scoring.params.proto (same keys)",
}


class ScoringConfig(Section):
    """What the trained-model driver shares across metrics; each metric's own settings
    live under ``params.<metric>`` (datapruning.scoring.params)."""

    metric: str = "el2n"
    source: Literal["ensemble", "runs"] = Field(
        "ensemble",
        description=(
            "Where a pipeline's scores come from. ensemble: separate scoring models "
            "(seeds x epochs below). runs: the experiment's full-data runs (the reference "
            "and the KD teacher) record them as they train (train.record) and the scores "
            "are their mean over seeds; no scoring model is trained, students wait on those "
            "runs and are charged only the recording seconds. Only el2n and forgetting can "
            "be recorded; grand, proto and random keep their own scoring cells. Turning it on "
            "retrains the full-data runs once (train.record is part of their key)."
        ),
    )
    # Number of scoring models (seeds 0..seeds-1) whose scores are averaged.
    seeds: int = Field(4, ge=1)
    # Epochs each scoring model trains before it scores (EL2N: early in training).
    epochs: int = Field(10, ge=1)
    # Train the seeds' models at once as one batched ensemble (el2n, grand, forgetting).
    batched: bool = True
    # Seeds trained together per ensemble; each group's scores are saved as it finishes.
    ensemble_size: int = Field(8, ge=1)
    # torch threads while a batched ensemble trains (None: one fewer than the cores,
    # at least one, at most one per model: a busy core otherwise stalls every thread;
    # datapruning.scoring.ensemble.ensemble_threads has the figures).
    ensemble_threads: int | None = Field(None, ge=1)
    # The scoring model when it differs from the student's (``model:``): a small
    # proxy makes scoring cheap. None: the student's model. Recorded in the scores'
    # provenance and part of their cache key.
    model: ModelConfig | None = None
    # Pipelines and the score flow split the per-example passes of el2n, grand and
    # proto into this many shards (contiguous row blocks), one cell each, then merge
    # them (``datapruning score --shard i/n`` by hand). Other metrics ignore it.
    shards: int = Field(1, ge=1)
    # Each metric's own settings under its name, e.g. {grand: {layer: last}, proto: {k: 20}}.
    params: MetricParamsSection = Field(default_factory=MetricParamsSection)  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in _MOVED_SCORING_KEYS.items():
                if old in data:
                    raise ValueError(f"scoring.{old} moved to {new}; rename the key")
        return data

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        from datapruning.scoring.registry import METRICS

        return check_name("metric", metric, METRICS)

    def params_for(self, metric: str) -> Any:
        """The params model of ``metric`` (its defaults where the config sets none)."""
        return getattr(self.params, metric)


class StudentsConfig(Section):
    """The grid of student runs: every fraction x strategy x kd x seed.

    A strategy selects a fixed subset from the scores (``hard``, ``random``, ...),
    or is ``rs2``: a fresh random subset of the fraction every epoch, or is
    ``infobatch``: all the data, pruned during training by loss, once for each
    value of ``prune`` instead of each fraction (no scores are read or charged),
    or is ``short``: all the data on a shortened schedule, the fraction's share
    of the full-data steps with the cosine annealed over them (the baseline a
    sceptic compares pruning with; recipe ``full-short``).

    ``budgets`` sets how long a subset student trains: ``epochs`` (the
    config's epochs over its subset, so fewer steps) and/or ``steps`` (as many
    optimizer steps as the full-data run: equal compute). InfoBatch and
    ``short`` students have their own length and run once, under ``epochs``.
    """

    fractions: list[float] = Field(default_factory=lambda: [0.3, 0.5])
    # The InfoBatch students' prune values (used only when strategies include infobatch).
    prune: list[float] = Field(default_factory=lambda: [0.5])
    strategies: list[str] = Field(default_factory=lambda: ["random", "hard"])
    kd: list[bool] = Field(default_factory=lambda: [False, True])
    seeds: list[Seed] = Field(default_factory=lambda: [0])
    budgets: list[Literal["epochs", "steps"]] = Field(default_factory=lambda: ["epochs"])

    @field_validator("fractions", "strategies", "kd", "seeds", "prune", "budgets")
    @classmethod
    def _not_empty(cls, values: list[Any]) -> list[Any]:
        if not values:
            raise ValueError("is an empty grid axis: give at least one value")
        return values

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        for fraction in fractions:
            check_fraction(fraction)
        return fractions

    @field_validator("prune")
    @classmethod
    def _prune(cls, values: list[float]) -> list[float]:
        for value in values:
            if not 0 <= value < 1:
                raise ValueError(f"prune {value} must lie in [0, 1)")
        return values

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, strategies: list[str]) -> list[str]:
        from datapruning.scores import STRATEGIES

        choices = (*STRATEGIES, RS2_STRATEGY, INFOBATCH_STRATEGY, SHORT_STRATEGY)
        return [check_name("student strategy", s, choices) for s in strategies]


class SweepDatasetConfig(DatasetConfig):
    """A sweep's dataset, with what its experiment changes from the config.

    ``label`` names the experiment's directory (default ``<dataset>-<model>``;
    needed when one dataset appears at several sizes). ``train``, ``scoring``
    and ``students`` are merged key by key into the config's sections for this
    experiment only, e.g. fewer seeds at the largest size; ``metrics`` replaces
    the sweep's metrics for it.
    """

    label: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    train: dict[str, Any] | None = None
    scoring: dict[str, Any] | None = None
    students: dict[str, Any] | None = None
    # The metrics this experiment scores (default: the sweep's metrics).
    metrics: list[str] | None = None

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: list[str] | None) -> list[str] | None:
        from datapruning.scoring.registry import METRICS

        return None if metrics is None else [check_name("metric", m, METRICS) for m in metrics]

    @property
    def overrides(self) -> dict[str, dict[str, Any]]:
        sections = {"train": self.train, "scoring": self.scoring, "students": self.students}
        return {name: value for name, value in sections.items() if value}

    def plain(self) -> DatasetConfig:
        return DatasetConfig(name=self.name, params=self.params)


class SweepConfig(Section):
    """Axes a sweep adds to the students grid; an unset axis is the config's single value.

    Every dataset x model pair is one experiment (its own teachers, scores and
    report under ``output_dir/name/<dataset>-<model>``); within it the students
    grid runs for every metric and every sparsity target (of ``train.sparsity``'s
    schedule; 0 is dense). Random and RS2 students do not read the scores, so
    they run once per experiment, not once per metric.
    """

    datasets: list[SweepDatasetConfig] | None = None
    models: list[ModelConfig] | None = None
    metrics: list[str] | None = None
    sparsity: list[float] | None = None

    @field_validator("datasets", "models", "metrics", "sparsity")
    @classmethod
    def _not_empty(cls, values: list[Any] | None) -> list[Any] | None:
        if values is not None and not values:
            raise ValueError("is an empty grid axis: give at least one value, or drop the key")
        return values

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: list[str] | None) -> list[str] | None:
        from datapruning.scoring.registry import METRICS

        return None if metrics is None else [check_name("metric", m, METRICS) for m in metrics]

    @field_validator("sparsity")
    @classmethod
    def _targets(cls, targets: list[float] | None) -> list[float] | None:
        for target in targets or []:
            if not 0 <= target < 1:
                raise ValueError(f"sparsity {target} must lie in [0, 1)")
        return targets


# The students grid's strategy that trains on RS2 instead of a fixed subset.
RS2_STRATEGY = "rs2"
# ... and the one that trains on all the data with InfoBatch's dynamic pruning.
INFOBATCH_STRATEGY = "infobatch"
# ... and the one that trains on all the data for the fraction's share of the steps.
SHORT_STRATEGY = "short"


class ReportConfig(Section):
    # The report's target accuracy is the full-data run's final accuracy minus this.
    target_drop: float = Field(0.01, ge=0, lt=1)


class PipelineConfig(Section):
    """The whole experiment that ``datapruning run`` executes."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]+$")
    output_dir: Path = Path("runs")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    kd: KDConfig = Field(default_factory=KDConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    students: StudentsConfig = Field(default_factory=StudentsConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)

    @property
    def run_root(self) -> Path:
        return self.output_dir / self.name

    @model_validator(mode="after")
    def _sweep_overrides(self) -> PipelineConfig:
        for i, dataset in enumerate(self.sweep.datasets or []):
            try:
                self.sections_for(dataset)
            except ValidationError as exc:
                raise ValueError(
                    f"sweep.datasets[{i}] ({dataset.label or dataset.name}): "
                    f"{describe_validation_error(exc)}"
                ) from None
        return self

    @model_validator(mode="after")
    def _sweep_sparsity(self) -> PipelineConfig:
        # The sweep's targets are gradual magnitude's; N:M prunes to its own fixed 1 - n/m.
        trains = [self.train] + [
            section
            for dataset in self.sweep.datasets or []
            if isinstance(section := self.sections_for(dataset).get("train"), TrainConfig)
        ]
        for train in trains if self.sweep.sparsity else []:
            if train.sparsity.scope == "nm":
                raise ValueError(
                    f"sweep.sparsity {self.sweep.sparsity} sets gradual magnitude targets, but "
                    f"train.sparsity.scope nm prunes to {train.sparsity.n}:{train.sparsity.m}; "
                    "drop sweep.sparsity, or set train.sparsity.scope to global or layer"
                )
        return self

    def sections_for(self, dataset: SweepDatasetConfig) -> dict[str, Section]:
        """This config's sections with a sweep dataset's overrides merged in."""
        merged: dict[str, Section] = {}
        for name, overrides in dataset.overrides.items():
            section = getattr(self, name)
            # What the config set, not its defaults: an override may switch train.sparsity
            # to another algorithm without the first one's fields in the way.
            raw = _merge(section.model_dump(mode="python", exclude_defaults=True), overrides)
            merged[name] = type(section).model_validate(raw)
        return merged


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` set key by key (nested mappings merged the same way)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merge(merged[key], value)
        merged[key] = value
    return merged


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> PipelineConfig:
    """Read a YAML config, apply ``key.sub=value`` overrides, and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_bytes().decode())
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not text (UTF-8 YAML)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}") from None
    except RecursionError:  # PyYAML recurses once per level of nesting
        raise ConfigError(f"config file {str(path)!r} nests too deeply to be a config") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections at the top")
    anchor_dataset_paths(raw, path.parent)  # the file's own paths; overrides stay the shell's
    for override in overrides or []:
        apply_override(raw, override)
    return parse_config(raw, source=str(path))


def anchor_dataset_paths(raw: dict[str, Any], folder: Path) -> None:
    """Make the relative dataset locations of a config file (``npz:data.npz``,
    ``dataset.params.path``, ``.root``, and the sweep's datasets') relative to the
    file's ``folder``, not to the working directory, so a config finds its data from
    wherever it is run."""
    from datapruning.data.sources import SOURCES

    sweep = raw.get("sweep")
    sections = [raw.get("dataset")]
    if isinstance(sweep, dict) and isinstance(sweep.get("datasets"), list):
        sections += sweep["datasets"]
    for section in sections:
        if not isinstance(section, dict):
            continue
        name = section.get("name")
        if not isinstance(name, str):
            continue
        base, colon, location = name.partition(":")
        source = SOURCES.get(base)
        if source is None or source.location is None:
            continue
        if colon and location:
            section["name"] = f"{base}:{_anchored(location, folder)}"
        params = section.get("params")
        if isinstance(params, dict) and isinstance(params.get(source.location), str):
            params[source.location] = _anchored(params[source.location], folder)


def _anchored(location: str, folder: Path) -> str:
    path = Path(location).expanduser()
    return location if path.is_absolute() else str(folder / path)


def parse_config(raw: dict[str, Any], source: str = "config") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in a nested mapping; the value is parsed as YAML."""
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
        node = child
    try:
        node[leaf] = yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"override {override!r}: value is not valid YAML") from None
    except RecursionError:  # PyYAML recurses once per level of nesting
        # The value is hundreds of brackets: name the key only.
        raise ConfigError(f"override of {key.strip()!r}: the value nests too deeply") from None
