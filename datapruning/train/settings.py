"""The settings of a training run, beside the code that uses them (torch-free).

:class:`TrainConfig` (``train``: the optimisation, the data the loop trains on
(:class:`DataConfig`: full, subset, RS2, InfoBatch, online selection), the clock,
resume points and ``sparsity``), :class:`ModelConfig` (``model``) and
:class:`KDConfig` (``kd``) are read by :mod:`datapruning.train`; the experiment's
config (:mod:`datapruning.config`) assembles them with the other packages' sections.

``train.sparsity`` is one of three algorithms, each with only its own fields
(a pydantic discriminated union chosen by ``scope`` and ``mode``, so configs
written before keep their meaning):

- :class:`GradualMagnitude` (``scope: global`` or ``layer``): Zhu & Gupta's cubic
  schedule s_t = target + (initial - target)(1 - (t - start)/(end - start))³,
  masks recomputed every ``every`` steps, optional rewinding; ``target: 0`` is
  dense (the default).
- :class:`OneShotNM` (``scope: nm``): an N:M mask (``n`` of every ``m``
  consecutive input weights) fixed once at ``start``, optional rewinding.
- :class:`DynamicNM` (``scope: nm``, ``mode: dynamic``): the N:M mask recomputed
  from dense weights every step from ``start``, trained through with SR-STE;
  ``progressive`` fades the pruned weights out until ``end``.

A field of another algorithm is refused with one line naming the algorithm it
belongs to. The pruners are :mod:`datapruning.train.sparsity`'s; this module
imports only pydantic, so validating a config never imports torch.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    StrictFloat,
    StrictInt,
    Tag,
    TypeAdapter,
    field_validator,
    model_serializer,
    model_validator,
)

from datapruning._sections import FiniteParams, Section, Seed, check_fraction, check_name

# A point in training: an int is a step count, a float a fraction of all steps
# (strict, so a YAML true is not taken for step 1).
StepOrFraction = StrictInt | StrictFloat


class _Sparsity(Section):
    """What every sparsity algorithm shares: which weights, and when pruning starts."""

    variant: ClassVar[str]  # how errors name it
    start: StepOrFraction = 0.1
    # Regexes searched in parameter names (e.g. "features.3.weight"); empty include: all.
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    # The first layer (stem) and the last linear (classifier) stay dense unless this is set.
    prune_first_last: bool = False

    @model_validator(mode="before")
    @classmethod
    def _own_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in cls.model_fields:
                    continue
                owners = [v.variant for v in _VARIANTS if key in v.model_fields]
                if owners:
                    raise ValueError(
                        f"{key} applies to {' and '.join(owners)}, not to {cls.variant}; drop it"
                    )
        return data

    @field_validator("start", "end", "every", "rewind", check_fields=False)
    @classmethod
    def _step_or_fraction(cls, value: StepOrFraction | None) -> StepOrFraction | None:
        if isinstance(value, float) and not 0 <= value <= 1:
            raise ValueError(
                f"{value} must be a step count (int) or a fraction of training in [0, 1]"
            )
        if isinstance(value, int) and value < 0:
            raise ValueError(f"step {value} must be >= 0")
        return value

    @field_validator("include", "exclude")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except OverflowError:  # a repeat count such as a{99999999999}
                raise ValueError(f"{pattern!r} has a repeat count too large for a regex") from None
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regex ({exc})") from None
        return patterns


class GradualMagnitude(_Sparsity):
    """Gradual magnitude pruning (Zhu & Gupta 2017) of conv/linear weights; off at target 0."""

    variant = "gradual magnitude (scope global or layer)"
    scope: Literal["global", "layer"] = "global"
    target: float = 0.0
    initial: float = 0.0
    end: StepOrFraction = 0.7
    every: StepOrFraction = 0.02
    # scope global: every pruned layer keeps at least this fraction of its weights.
    min_density: float = Field(0.02, ge=0, le=1)
    # Weight rewinding (Frankle et al. 2020): when the final masks are set, reset the
    # model to its weights after this many steps (int) or this fraction of training
    # (float), then train on with the masks fixed. None: no rewinding.
    rewind: StepOrFraction | None = None

    @field_validator("target", "initial")
    @classmethod
    def _sparsity(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(f"sparsity {value} must lie in [0, 1)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GradualMagnitude:
        if self.initial > self.target:
            raise ValueError(f"initial sparsity {self.initial} exceeds target {self.target}")
        if self.every == 0:
            raise ValueError("every must be at least 1 step (or a fraction > 0)")
        return self

    @property
    def enabled(self) -> bool:
        return self.target > 0


class _NM(_Sparsity):
    scope: Literal["nm"] = "nm"
    n: int = Field(2, ge=1)
    m: int = Field(4, ge=2)

    @model_validator(mode="before")
    @classmethod
    def _scope_nm(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("scope", "nm") != "nm":
            raise ValueError(
                f"mode {data.get('mode')} trains N:M masks and needs scope nm, not "
                f"{data['scope']}; set scope: nm, or drop mode for gradual magnitude"
            )
        return data

    @model_validator(mode="after")
    def _n_below_m(self) -> _NM:
        if self.n >= self.m:
            raise ValueError(f"N:M needs n < m, got {self.n}:{self.m}")
        return self

    @property
    def enabled(self) -> bool:
        return True

    @property
    def target(self) -> float:
        """The sparsity every targeted layer ends at: 1 - n/m."""
        return 1 - self.n / self.m


class OneShotNM(_NM):
    """An N:M mask fixed once at ``start`` (prune, then fine-tune, as NVIDIA's ASP does)."""

    variant = "one-shot N:M (scope nm)"
    mode: Literal["oneshot"] = "oneshot"
    rewind: StepOrFraction | None = None


class DynamicNM(_NM):
    """N:M recomputed from dense weights every step, trained with SR-STE (Zhou et al. 2021)."""

    variant = "dynamic N:M (scope nm, mode dynamic)"
    mode: Literal["dynamic"] = "dynamic"
    # progressive: the pruned weights fade out linearly from full strength at start to zero
    # at end instead of being cut at start (MDGF-linear, Bambhaniya et al. 2024).
    end: StepOrFraction = 0.7
    progressive: bool = False
    # SR-STE's sparse-refined decay lambda, added as lambda * (1 - mask) * W to the gradient
    # of every weight (2e-4 in the paper; 0 is plain straight-through).
    sr_ste_decay: float = Field(2e-4, ge=0)
    # 2:4: semi_structured runs each eligible nn.Linear's forward and input gradient through
    # torch's 2:4 sparse kernels on CUDA sm80+ in bf16/fp16 (where they are faster;
    # datapruning.kernels.semi_structured), dense masked matmuls elsewhere.
    kernel: Literal["dense", "semi_structured"] = "dense"

    @model_validator(mode="after")
    def _semi_structured_is_2_4(self) -> DynamicNM:
        if self.kernel == "semi_structured" and (self.n, self.m) != (2, 4):
            raise ValueError(
                f"kernel semi_structured runs 2:4 masks; it needs n 2, m 4 (got {self.n}:{self.m})"
            )
        return self


_VARIANTS: tuple[type[_Sparsity], ...] = (GradualMagnitude, OneShotNM, DynamicNM)


def _variant(data: Any) -> str:
    """Which algorithm a ``train.sparsity`` mapping (or model) describes."""
    get = data.get if isinstance(data, dict) else lambda key: getattr(data, key, None)
    if get("mode") == "dynamic":
        return "<dynamic>"
    return "<nm>" if get("scope") == "nm" else "<gmp>"


# train.sparsity: the one of the three the mapping's scope and mode name. The tags are in
# angle brackets: error messages leave them out of where a problem is (errors.py).
SparsityConfig = Annotated[
    Annotated[GradualMagnitude, Tag("<gmp>")]
    | Annotated[OneShotNM, Tag("<nm>")]
    | Annotated[DynamicNM, Tag("<dynamic>")],
    Discriminator(_variant),
]
Sparsity = GradualMagnitude | OneShotNM | DynamicNM

_ADAPTER: TypeAdapter[Sparsity] = TypeAdapter(SparsityConfig)


def sparsity_config(**fields: Any) -> Sparsity:
    """The sparsity settings ``fields`` describe, validated as ``train.sparsity`` is:
    ``sparsity_config(target=0.9)`` is gradual magnitude, ``sparsity_config(scope="nm")``
    one-shot 2:4."""
    return _ADAPTER.validate_python(fields)


class ModelConfig(Section):
    # None picks the dataset's default model (convnet1d for mnist1d, mlp for digits).
    name: str | None = None
    params: FiniteParams = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        from datapruning.models import MODELS

        return None if name is None else check_name("model", name, MODELS)


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

        return check_name("selection strategy", strategy, STRATEGIES)

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


class DynamicsConfig(Section):
    """Per-example training dynamics a run records as scores files (``train.record``).

    ``forgetting``: forgetting events and the first step each example was learned,
    from the predictions of the training forward passes (Toneva et al. 2019);
    ``aum``: the area under the margin, the mean of logit[y] - max other logit over
    those passes (Pleiss et al. 2020); ``el2n_epochs``: after each of these epochs,
    one eval-mode pass over the training set records EL2N (Paul et al. 2021), averaged
    over the passes. Forgetting and AUM count every presentation, so they need a run
    that sees every example every epoch (``train.data.mode: full``); EL2N passes over
    the whole training set whatever the run trains on. Recording changes no weight.
    """

    forgetting: bool = False
    aum: bool = False
    el2n_epochs: list[int] = Field(default_factory=list)

    @field_validator("el2n_epochs")
    @classmethod
    def _epochs(cls, epochs: list[int]) -> list[int]:
        if any(epoch < 1 for epoch in epochs):
            raise ValueError(f"el2n_epochs {epochs} must be epochs >= 1 (after that many epochs)")
        return sorted(set(epochs))

    @property
    def enabled(self) -> bool:
        return self.forgetting or self.aum or bool(self.el2n_epochs)


class TrainConfig(Section):
    """One training run: SGD (or AdamW) and a cosine LR over the steps taken."""

    epochs: int = Field(60, ge=1)
    # A fixed number of optimizer steps instead of epochs (compare recipes at equal compute).
    steps: int | None = Field(None, ge=1)
    # Linear LR warm-up, then cosine to zero. auto (the default): one epoch of the run's own
    # steps, at most a tenth of all of them (datapruning.train.schedule.warmup_steps); a
    # number: that many epochs' worth of steps (0: none). Without it KD students at lr
    # 0.05-0.1 could collapse to a constant output in their first steps
    # (bench/results/kd_stability.json); every run gets it, so baselines stay comparable.
    # It is not enough alone at lr 0.1: see clip_grad_norm.
    warmup_epochs: float | Literal["auto"] = "auto"
    # Rescale the gradients to at most this total L2 norm before each optimizer step (None:
    # never; under fp16 the unscaled gradients' norm; the scoring ensemble clips each model
    # on its own). 5 by default, for every run, the full-data reference, teacher and scoring
    # models included, so comparisons stay fair. KD's T^2-scaled loss reaches gradient norms
    # of 41.7 (50.5 at lr 0.1) in the first epoch on MNIST-1D 20k with neither default, and
    # the warm-up alone still left 9 of 21 KD students collapsed at lr 0.1, while
    # cross-entropy's stay under 5 (the clip leaves them alone). With both defaults
    # bench/results/kd_stability.json measured 0 of 108 KD students collapsed at lr 0.05
    # and 0 of 108 at lr 0.1 (digits, MNIST-1D 4k and 20k, every recipe, 3 seeds), and
    # full-data accuracy as without either, within seed noise (mean of 8 seeds: 0.03 points
    # below to 0.32 above; bench/results/kd_stability_full_data.json has seeds 3-7).
    clip_grad_norm: float | None = Field(5.0, gt=0)
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
    # Processes the run trains on (DDP through torchrun; datapruning.train.distributed):
    # `datapruning train --nproc N` and the pipeline's runners launch them; under torchrun
    # the launcher's count is used. Each takes batch_size / nproc of every batch.
    nproc: int = Field(1, ge=1)
    # With several processes on CUDA, BatchNorm's batch statistics over the global batch
    # (torch.nn.SyncBatchNorm, GPU only) rather than over each process's share.
    sync_bn: bool = False
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
    # Training dynamics recorded as scores files in the run directory (off by default).
    record: DynamicsConfig = Field(default_factory=DynamicsConfig)

    @model_validator(mode="before")
    @classmethod
    def _optimizer_defaults(cls, data: Any) -> Any:
        # AdamW's own defaults where the config leaves lr / weight_decay out.
        if isinstance(data, dict) and data.get("optimizer") == "adamw":
            data = {**ADAMW_DEFAULTS, **data}
        return data

    @field_validator("warmup_epochs")
    @classmethod
    def _warmup(cls, warmup: float | str) -> float | str:
        if warmup != "auto" and warmup < 0:  # type: ignore[operator]
            raise ValueError(f"warmup_epochs {warmup} must be >= 0 (or auto)")
        return warmup

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
