"""Typed configuration (pydantic) and YAML loading.

Every section rejects unknown keys, so a typo in a config file is an error that
names the key rather than a silently ignored setting. Names (dataset, model,
metric, strategy) are checked against their registries when the config loads,
before any work starts.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from datapruning._sections import FiniteParams, Section, Seed
from datapruning.errors import ConfigError, describe_validation_error

# train.sparsity's algorithms, re-exported: their settings live beside their code.
from datapruning.train.settings import DynamicNM as DynamicNM
from datapruning.train.settings import GradualMagnitude, SparsityConfig
from datapruning.train.settings import OneShotNM as OneShotNM
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


class ModelConfig(Section):
    # None picks the dataset's default model (convnet1d for mnist1d, mlp for digits).
    name: str | None = None
    params: FiniteParams = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        from datapruning.models import MODELS

        return None if name is None else _check_name("model", name, MODELS)


class DataConfig(Section):
    """What the loop trains on: all examples, a fixed subset, or RS2 (a fresh subset per epoch).

    ``subset`` takes ``indices`` (a .npy of training-set indices) or ``scores`` (a
    parquet from ``datapruning score``) with ``keep`` and ``strategy``. ``rs2``
    draws ``fraction`` of the training set every epoch (Okanovic et al. 2023),
    without replacement across epochs unless ``replacement``; ``stratify`` draws
    each class in proportion. ``infobatch`` prunes during training from the
    losses (Qin et al. 2024, :class:`~datapruning.data.infobatch.InfoBatchSampler`):
    each epoch leaves out a share ``prune`` (default 0.5) of the below-mean-loss
    examples, weighs up the rest, and takes every example in the last ``anneal``
    (default 0.125) of the epochs. ``online`` scores candidate batches of
    ``batch_size / keep`` examples with the student (no gradient) and trains on
    the highest-loss ``keep`` share of each; with ``proxy`` (a registered model
    and its params, e.g. ``{name: convnet1d, params: {channels: 4}}``) a small
    separate model scores them instead and is trained on the kept share of
    every ``proxy_every``-th batch (:class:`~datapruning.train.dynamic.ProxySelection`).
    """

    mode: Literal["full", "subset", "rs2", "infobatch", "online"] = "full"
    indices: Path | None = None
    scores: Path | None = None
    keep: float | None = None
    strategy: str = "hard"
    fraction: float | None = None
    replacement: bool = False
    stratify: bool = False
    prune: float | None = Field(None, ge=0, lt=1)
    anneal: float | None = Field(None, ge=0, le=1)
    proxy: ModelConfig | None = None
    # The proxy trains on every proxy_every-th batch (and only scores the others).
    proxy_every: int = Field(1, ge=1)

    @field_validator("keep", "fraction")
    @classmethod
    def _fraction(cls, value: float | None) -> float | None:
        return None if value is None else check_fraction(value)

    @model_serializer(mode="wrap")
    def _without_unused_proxy(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Runs without a proxy dump as they did before it existed, so their config hashes
        # (resume points, the pipeline's cached cells) stay what they were.
        data = handler(self)
        if self.proxy is None and self.proxy_every == 1:
            data.pop("proxy", None)
            data.pop("proxy_every", None)
        return data

    @model_validator(mode="before")
    @classmethod
    def _infobatch_defaults(cls, data: Any) -> Any:
        # InfoBatch's published setting (prune 0.5, anneal 0.125) where the config leaves them out.
        if isinstance(data, dict) and data.get("mode") == "infobatch":
            data = {"prune": 0.5, "anneal": 0.125, **data}
        return data

    @model_validator(mode="after")
    def _dynamic(self) -> DataConfig:
        if self.mode != "infobatch" and (self.prune is not None or self.anneal is not None):
            raise ValueError(f"prune and anneal apply to mode infobatch, not {self.mode}")
        if self.mode == "online" and self.keep is None:
            raise ValueError("mode online needs keep (the share of each candidate batch trained)")
        if self.mode != "online" and self.proxy is not None:
            raise ValueError(f"proxy applies to mode online, not {self.mode}")
        if self.proxy is None and self.proxy_every != 1:
            raise ValueError(f"proxy_every={self.proxy_every} applies with a proxy; give proxy")
        return self

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, strategy: str) -> str:
        from datapruning.scores import STRATEGIES

        return _check_name("selection strategy", strategy, STRATEGIES)

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        subset_keys = {"indices": self.indices, "scores": self.scores, "keep": self.keep}
        if self.mode == "online":  # keep is online's share of each candidate batch
            subset_keys.pop("keep")
        if self.mode == "subset":
            if (self.indices is None) == (self.scores is None):
                raise ValueError("mode subset needs exactly one of indices (.npy) or scores")
            if self.scores is not None and self.keep is None:
                raise ValueError("mode subset with scores needs keep (the fraction to keep)")
            if self.indices is not None and self.keep is not None:
                raise ValueError("keep applies to scores; indices already fix the subset")
        elif any(value is not None for value in subset_keys.values()):
            key = next(k for k, v in subset_keys.items() if v is not None)
            raise ValueError(f"{key} applies to mode subset, not {self.mode}")
        if self.mode == "rs2" and self.fraction is None:
            raise ValueError("mode rs2 needs fraction (the share of examples drawn per epoch)")
        if self.mode != "rs2" and (self.fraction is not None or self.replacement or self.stratify):
            raise ValueError(
                f"fraction, replacement and stratify apply to mode rs2, not {self.mode}"
            )
        return self


_RELATIVE_TARGET = re.compile(r"^\s*(\d*\.?\d+)\s*r\s*$")


def parse_target(target: float | str) -> tuple[float, bool]:
    """``0.9`` -> (0.9, absolute); ``"0.99r"`` -> (0.99, relative to the reference run)."""
    if isinstance(target, str):
        match = _RELATIVE_TARGET.match(target)
        if match is None:
            raise ValueError(
                f"target {target!r} must be an accuracy like 0.9 or a share of the "
                "reference run's accuracy like 0.99r"
            )
        value, relative = float(match.group(1)), True
    else:
        value, relative = float(target), False
    if not 0 < value <= 1:
        raise ValueError(f"target accuracy {target} must lie in (0, 1]")
    return value, relative


class TrainConfig(Section):
    """One training run: SGD (or AdamW) and a cosine LR over the steps taken."""

    epochs: int = Field(60, ge=1)
    # A fixed number of optimizer steps instead of epochs (compare recipes at equal compute).
    steps: int | None = Field(None, ge=1)
    # Linear LR warm-up over this many epochs' worth of steps, then cosine to zero.
    warmup_epochs: float = Field(0.0, ge=0)
    batch_size: int = Field(100, ge=1)
    # sgd: SGD with (Nesterov) momentum; adamw: AdamW, weight decay decoupled
    # (datapruning.train.schedule.make_optimizer).
    optimizer: Literal["sgd", "adamw"] = "sgd"
    # Peak LR and weight decay; unless given, adamw takes lr 1e-3 and weight_decay 0.05.
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    # AdamW's moment decay rates and denominator term (sgd ignores them).
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    # Evaluate on the test set every this many epochs (0: only after the last).
    eval_every: int = Field(1, ge=0)
    # Test accuracies whose first-reached training time the run records: absolute
    # (0.9) or a share of the reference run's final accuracy (0.99r).
    targets: list[float | str] = Field(default_factory=lambda: [0.8, 0.9])
    # The run (directory or its summary.json) whose final accuracy scales relative targets.
    reference: Path | None = None
    # memory: batches sliced from in-memory tensors (a streaming set: read in the main
    # process); torch: a torch DataLoader; ffcv: an FFCV loader over a .beton (needs the
    # ffcv extra). A streaming set keeps uint8 images until the batch with every loader.
    loader: Literal["memory", "torch", "ffcv"] = "memory"
    # DataLoader processes that read a streaming set's batches with loader torch (0: the
    # main process). Not part of what a run computes: a resume may change it.
    workers: int = Field(0, ge=0)
    # The .beton for loader ffcv (`datapruning convert`); None: one written once
    # per dataset into the cache ($DATAPRUNING_CACHE_DIR, else ~/.cache/datapruning).
    beton: Path | None = None
    # torch intra-op threads for the run (small models train fastest on one).
    threads: int | None = Field(1, ge=1)
    # cpu, cuda, cuda:N or mps; checked against the machine when a run starts.
    device: str = "cpu"
    # Forward pass in fp32, or under autocast in bf16 or fp16 (fp16 adds a gradient
    # scaler and needs CUDA); weights, optimizer state and the loss stay float32.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # Model and input batches in channels-last memory format (models with 2-D convs).
    channels_last: bool = False
    # torch.compile the model; its compile time counts as training time and is also
    # reported apart (summary.json compile_seconds).
    compile: bool = False
    seed: Seed = 0
    # Per-batch augmentation (datapruning.train.augment): crop_flip (padded random crop +
    # horizontal flip, images), shift_noise (1-D signals), none, or auto: the dataset's
    # default (crop_flip for natural images: cifar10, cifar100, imagefolder; else none).
    # With KD it runs the teacher online on each augmented batch instead of cached logits.
    augment: Literal["auto", "none", "crop_flip", "shift_noise"] = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    # Save a resume checkpoint every this many steps (0: never); a rerun continues from it.
    checkpoint_every: int = Field(0, ge=0)
    # torch.use_deterministic_algorithms(True) during the run.
    deterministic: bool = False
    # Weight sparsity: gradual magnitude (the default, off at target 0), one-shot N:M or
    # dynamic N:M, each with its own fields (datapruning.train.settings).
    sparsity: SparsityConfig = Field(default_factory=GradualMagnitude)

    @model_validator(mode="before")
    @classmethod
    def _optimizer_defaults(cls, data: Any) -> Any:
        # AdamW's own defaults where the config leaves lr / weight_decay out.
        if isinstance(data, dict) and data.get("optimizer") == "adamw":
            data = {**ADAMW_DEFAULTS, **data}
        return data

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not _DEVICE.match(device):
            raise ValueError(f"device {device!r} is not one of cpu, cuda, cuda:N, mps")
        return device

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"betas {list(betas)} must each lie in [0, 1)")
        return betas

    @field_validator("targets")
    @classmethod
    def _accuracies(cls, targets: list[float | str]) -> list[float | str]:
        parsed = {target: parse_target(target) for target in targets}
        # Absolute targets first, each group sorted; duplicates dropped.
        unique = {(relative, value): target for target, (value, relative) in parsed.items()}
        return [unique[key] for key in sorted(unique)]

    @model_validator(mode="after")
    def _reference_for_relative_targets(self) -> TrainConfig:
        if self.reference is None and any(parse_target(t)[1] for t in self.targets):
            raise ValueError("relative targets (like 0.99r) need train.reference, a finished run")
        return self

    @field_validator("loader")
    @classmethod
    def _loader_installed(cls, loader: str) -> str:
        # find_spec, not import: ffcv (numba) takes seconds to import.
        if loader == "ffcv" and importlib.util.find_spec("ffcv") is None:
            raise ValueError(
                "loader ffcv needs FFCV: pip install 'datapruning-tta[ffcv]', or use loader torch"
            )
        return loader


# What optimizer adamw means when the config does not set these (see schedule.py).
ADAMW_DEFAULTS = {"lr": 1e-3, "weight_decay": 0.05}
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


class KDConfig(Section):
    """Knowledge distillation: (1-alpha)*CE + alpha*T^2*KL(teacher_T || student_T)."""

    # A weight in [0, 1], or auto: set from the kept fraction (datapruning.train.kd.auto_alpha).
    alpha: float | Literal["auto"] = 0.5
    temperature: float = Field(4.0, gt=0)
    # The teacher: a checkpoint (run directory or .pt) of any registered model trained on
    # this dataset, or precomputed logits (.npy, one row per training example).
    teacher: Path | None = None
    teacher_logits: Path | None = None
    # Keep a checkpoint teacher's logits in a .npy beside it, reused by later runs.
    cache_logits: bool = True

    @field_validator("alpha", mode="before")
    @classmethod
    def _alpha(cls, alpha: Any) -> Any:
        if alpha == "auto":
            return alpha
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha {alpha!r} must lie in [0, 1] or be auto")
        return float(alpha)

    @model_validator(mode="after")
    def _one_teacher(self) -> KDConfig:
        if self.teacher is not None and self.teacher_logits is not None:
            raise ValueError("give teacher (a checkpoint) or teacher_logits (.npy), not both")
        return self


def _metric_params_section() -> type[BaseModel]:
    """``scoring.params``: one field per registered metric, holding its own params model."""
    from datapruning.scoring import METRICS

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
    # Number of scoring models (seeds 0..seeds-1) whose scores are averaged.
    seeds: int = Field(4, ge=1)
    # Epochs each scoring model trains before it scores (EL2N: early in training).
    epochs: int = Field(10, ge=1)
    # Train the seeds' models at once as one batched ensemble (el2n, grand, forgetting).
    batched: bool = True
    # Seeds trained together per ensemble; each group's scores are saved as it finishes.
    ensemble_size: int = Field(8, ge=1)
    # torch threads while a batched ensemble trains (None: every core, at most one
    # per model). One wide ensemble can use more cores than one small model can.
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
        from datapruning.scoring import METRICS

        return _check_name("metric", metric, METRICS)

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
        return [_check_name("student strategy", s, choices) for s in strategies]


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
        from datapruning.scoring import METRICS

        return None if metrics is None else [_check_name("metric", m, METRICS) for m in metrics]

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
        from datapruning.scoring import METRICS

        return None if metrics is None else [_check_name("metric", m, METRICS) for m in metrics]

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


def check_fraction(fraction: float) -> float:
    if not 0 < fraction <= 1:
        raise ValueError(f"kept fraction {fraction} must lie in (0, 1]")
    return fraction


def _check_name(kind: str, name: str, registry: Any) -> str:
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(registry))}")
    return name


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
    for override in overrides or []:
        apply_override(raw, override)
    return parse_config(raw, source=str(path))


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
