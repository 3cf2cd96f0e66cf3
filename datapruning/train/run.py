"""A training run's inputs, resolved and checked before anything is written.

:func:`resolve_run` turns the user's settings (dataset, model, train and KD
config, a subset or a teacher) into one :class:`Run`: the data and its
sampler, the batches, the step plan, the built model (seeded), the pruner, the
teacher's logits with alpha resolved, the time-to-accuracy targets, device and
precision, the config hash that keys a resume, and the resume state if one is
there. Every bad input raises :class:`~datapruning.errors.DataPruningError`
here, so a failed run never touches its directory. :func:`describe` gives the
summary's fields about those inputs. The loop itself
(:mod:`datapruning.train.loop`) only runs a resolved :class:`Run`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from datapruning import __version__
from datapruning._io import read_indices
from datapruning.config import DataConfig, KDConfig, ModelConfig, TrainConfig
from datapruning.data.infobatch import InfoBatchSampler
from datapruning.data.loaders import Batch, make_batches, make_source_batches
from datapruning.data.samplers import IndexSampler, RS2Sampler, SubsetSampler, as_index_array
from datapruning.data.sources import Dataset
from datapruning.errors import DataPruningError
from datapruning.train.augment import Augmenter, resolve_recipe
from datapruning.train.device import (
    Precision,
    check_channels_last,
    check_compile,
    resolve_device,
    resolve_precision,
)
from datapruning.train.dynamic import candidate_batch
from datapruning.train.kd import (
    OnlineTeacher,
    TeacherLogits,
    online_teacher,
    resolve_alpha,
    teacher_logits,
)
from datapruning.train.schedule import DynamicStepPlan, StepPlan, plan_steps
from datapruning.train.sparsity import Pruner, build_pruner
from datapruning.train.state import RESUME_NAME, TrainState, forked_rngs, rng_state
from datapruning.train.tta import reference_accuracy, resolve_targets
from datapruning.user import ModelSpec

# Settings that do not change what a run computes: a resume may differ in them.
_NOT_HASHED = {"checkpoint_every", "workers"}


@dataclass
class RunData:
    """The sampler of one run and what the summary says about it."""

    sampler: IndexSampler
    mode: str
    kept_fraction: float
    examples_per_epoch: int
    scoring_seconds: float | None = None
    identity: str = ""
    # mode online: the loader's candidate batch and the share of it trained on.
    candidate_batch: int | None = None
    online_keep: float | None = None


@dataclass(frozen=True)
class KDSettings:
    """Distillation as the run applies it: alpha resolved, the teacher's logits in hand,
    or (with augmentation) the teacher model that runs online on every augmented batch."""

    alpha: float
    temperature: float
    alpha_rule: str | None  # "auto" when alpha came from the kept fraction
    teacher: TeacherLogits | OnlineTeacher

    @property
    def mode(self) -> str:
        """``cached``: logits computed once per example; ``online``: on each augmented batch."""
        return "online" if isinstance(self.teacher, OnlineTeacher) else "cached"


@dataclass
class Run:
    """Everything one training run needs, resolved (and checked) before it starts."""

    dataset: Dataset
    cfg: TrainConfig
    model_cfg: ModelSpec  # a ModelConfig of the registry, or the user's module / factory
    model_name: str
    model_params: dict[str, Any]  # the registry model's params, or a user model's weights hash
    data: RunData
    batches: Iterable[Batch]
    plan: StepPlan
    model: nn.Module
    pruner: Pruner | None
    kd: KDSettings | None
    teacher_logits: Tensor | None  # the teacher's logits on the run's device
    targets: dict[str, float]
    reference: float | None
    run_dir: Path | None
    device: torch.device
    precision: Precision
    config_hash: str
    resume: dict[str, Any] | None  # a TrainState to continue from
    rng: dict[str, Any]  # the random states right after the model was initialised
    x_test: Tensor
    y_test: Tensor
    progress: bool | None = None
    # Per-batch augmentation with the run's own generator (None: the inputs as they are).
    augmenter: Augmenter | None = None
    # mode online with train.data.proxy: the proxy model that scores the candidates.
    proxy: nn.Module | None = None


def resolve_run(
    dataset: Dataset,
    model_cfg: ModelSpec,
    train_cfg: TrainConfig,
    *,
    indices: np.ndarray | None = None,
    teacher: str | os.PathLike[str] | nn.Module | None = None,
    kd: KDConfig | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> Run:
    """Everything :func:`fit` needs; raises DataPruningError on bad input, writes nothing."""
    from datapruning import user

    device = resolve_device(train_cfg.device)
    precision = resolve_precision(train_cfg.precision, device)
    if train_cfg.compile:
        check_compile(device)
    data = _data(dataset, train_cfg, indices)
    recipe = resolve_recipe(train_cfg.augment, dataset.default_augment, dataset.input_shape)
    if teacher is None and kd is not None:
        teacher = kd.teacher if kd.teacher is not None else kd.teacher_logits
    if teacher is not None and kd is None:
        kd = KDConfig()
    kd_settings = None
    if teacher is not None and kd is not None:
        # Augmented inputs change every step: the teacher sees the same augmented batch.
        teacher_info: TeacherLogits | OnlineTeacher = (
            teacher_logits(teacher, dataset, cache=kd.cache_logits)
            if recipe is None
            else online_teacher(teacher, dataset, device)
        )
        kd_settings = KDSettings(
            resolve_alpha(kd.alpha, data.kept_fraction),
            kd.temperature,
            "auto" if kd.alpha == "auto" else None,
            teacher_info,
        )
    reference = reference_accuracy(train_cfg.reference) if train_cfg.reference is not None else None
    targets = resolve_targets(train_cfg.targets, reference)
    model_record = user.record(model_cfg, dataset)
    model_name, model_params = model_record["name"], dict(model_record["params"])
    batch_size = data.candidate_batch or train_cfg.batch_size
    batches: Iterable[Batch]
    if dataset.streaming:  # read on demand in batches, never the whole set
        batches = make_source_batches(
            train_cfg.loader,
            dataset,
            data.sampler,
            batch_size,
            device=device,
            beton=train_cfg.beton,
            workers=train_cfg.workers,
        )
    else:
        # In-memory batches are sliced on the device; the torch and ffcv loaders copy
        # each batch there (from pinned memory, without blocking the host).
        streaming = train_cfg.loader != "memory"
        x_train = torch.as_tensor(dataset.x_train, device="cpu" if streaming else device)
        y_train = torch.as_tensor(dataset.y_train, device="cpu" if streaming else device)
        batches = make_batches(
            train_cfg.loader,
            x_train,
            y_train,
            data.sampler,
            batch_size,
            dataset=dataset,
            beton=train_cfg.beton,
            device=device,
            pin_memory=device.type == "cuda",
        )
    plan = plan_steps(train_cfg, len(batches))  # type: ignore[arg-type]
    if isinstance(data.sampler, InfoBatchSampler):  # epochs as long as the sampler makes them
        plan = _dynamic_plan(plan, data.sampler, train_cfg.batch_size)
    config_hash = _config_hash(dataset, model_name, model_params, train_cfg, data, kd_settings)
    run_path = Path(run_dir) if run_dir is not None else None
    resume = TrainState.read(run_path / RESUME_NAME, config_hash) if run_path else None

    with torch_settings(train_cfg), forked_rngs(device):
        torch.manual_seed(train_cfg.seed)
        # A registered model or a factory's is built under the seed; a module is used as given.
        model = user.build(model_cfg, dataset).to(device)
        rng = rng_state(device)  # fit continues from here: as if it ran right after
        # The proxy from the stream after the student's: seeded by the run's seed, and
        # the student's own training draws are unchanged by it.
        proxy = _build_proxy(train_cfg.data.proxy, dataset, device)
    if resume is not None and run_path is not None:
        _check_resume(resume, model, run_path / RESUME_NAME)
    if train_cfg.channels_last:
        check_channels_last(model, model_name)
        model = model.to(memory_format=torch.channels_last)
    # Bad sparsity settings (N:M width, schedule) fail here, before the run dir is touched.
    pruner = build_pruner(model, train_cfg.sparsity, plan.total_steps)
    if train_cfg.compile:
        # In place: the state_dict keys (checkpoints, pruner names) stay the model's.
        model.compile()
    return Run(
        dataset=dataset,
        cfg=train_cfg,
        model_cfg=model_cfg,
        model_name=model_name,
        model_params=model_params,
        data=data,
        batches=batches,
        plan=plan,
        model=model,
        pruner=pruner,
        kd=kd_settings,
        teacher_logits=(
            kd_settings.teacher.logits.to(device)
            if kd_settings is not None and isinstance(kd_settings.teacher, TeacherLogits)
            else None
        ),
        targets=targets,
        reference=reference,
        run_dir=run_path,
        device=device,
        precision=precision,
        config_hash=config_hash,
        resume=resume,
        rng=rng,
        x_test=torch.as_tensor(dataset.x_test, device=device),
        y_test=torch.as_tensor(dataset.y_test, device=device),
        progress=progress,
        augmenter=Augmenter(recipe, train_cfg.seed, device) if recipe is not None else None,
        proxy=proxy,
    )


def describe(
    run: Run,
    teacher_seconds: float | None,
    scoring_seconds: float | None,
    extra_summary: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The summary's fields about the run's inputs (data, KD, costs, config)."""
    kd, data, dataset = run.kd, run.data, run.dataset
    kd_summary = None
    if kd is not None:
        kd_summary = {"alpha": kd.alpha, "temperature": kd.temperature}
        if kd.alpha_rule is not None:
            kd_summary["alpha_rule"] = kd.alpha_rule
        kd_summary["teacher"] = kd.teacher.source
        kd_summary["cached_logits"] = isinstance(kd.teacher, TeacherLogits) and kd.teacher.cached
    return {
        "model": run.model_name,
        "data_mode": data.mode,
        "num_train_examples": data.examples_per_epoch,
        "kept_fraction": data.kept_fraction,
        "kd": kd_summary,
        # cached: the teacher's logits once per example; online: the teacher ran on every
        # augmented batch, inside the training clock.
        "kd_teacher": kd.mode if kd is not None else None,
        "augment": run.augmenter.recipe.name if run.augmenter is not None else None,
        "reference_acc": run.reference,
        "teacher_seconds": float(teacher_seconds or 0.0),
        "teacher_logits_seconds": (
            kd.teacher.seconds if kd is not None and isinstance(kd.teacher, TeacherLogits) else 0.0
        ),
        "scoring_seconds": float(
            scoring_seconds if scoring_seconds is not None else data.scoring_seconds or 0.0
        ),
        "dataset": {
            "name": dataset.name,
            "params": dict(dataset.params),
            "fingerprint": dataset.fingerprint,
            "num_train": dataset.num_train,
        },
        "config": {
            "model": {"name": run.model_name, "params": run.model_params},
            "train": run.cfg.model_dump(mode="json"),
        },
        "config_hash": run.config_hash,
        "version": __version__,
        **dict(extra_summary or {}),
    }


def _data(dataset: Dataset, cfg: TrainConfig, indices: np.ndarray | None) -> RunData:
    """The run's sampler: all examples, a fixed subset, or RS2."""
    n = dataset.num_train
    spec: DataConfig = cfg.data
    if indices is not None and spec.mode != "full":
        raise DataPruningError(
            f"indices were given but train.data.mode is {spec.mode}; give the data once"
        )
    scoring_seconds = None
    if spec.mode == "infobatch":
        assert spec.prune is not None and spec.anneal is not None  # the config fills them in
        if cfg.steps is not None:
            raise DataPruningError(
                f"train.steps={cfg.steps} with train.data.mode infobatch: InfoBatch prunes "
                "whole epochs, so give train.epochs and drop train.steps"
            )
        sampler = InfoBatchSampler(n, cfg.epochs, spec.prune, spec.anneal, seed=cfg.seed)
        # kept_fraction 1: every example stays available (alpha "auto" as for full data).
        return RunData(
            sampler, "infobatch", 1.0, n, identity=f"infobatch:{spec.prune}:{spec.anneal}"
        )
    if spec.mode == "online":
        assert spec.keep is not None  # the config checks it
        candidates = candidate_batch(cfg.batch_size, spec.keep)
        return RunData(
            SubsetSampler(np.arange(n), shuffle=True, seed=cfg.seed),
            "online",
            1.0,
            n,
            identity=f"online:{spec.keep}",
            candidate_batch=candidates,
            online_keep=spec.keep,
        )
    if spec.mode == "rs2":
        assert spec.fraction is not None  # the config checks it
        sampler: IndexSampler = RS2Sampler(
            n,
            spec.fraction,
            replacement=spec.replacement,
            stratify=dataset.y_train if spec.stratify else None,
            seed=cfg.seed,
        )
        kind = "with" if spec.replacement else "without"
        return RunData(
            sampler,
            "rs2",
            spec.fraction,
            sampler.epoch_size,
            identity=f"rs2:{spec.fraction}:{kind}:{spec.stratify}",
        )
    if spec.mode == "subset":
        if spec.indices is not None:
            indices = read_indices(spec.indices)
        else:
            from datapruning.scores import Scores

            assert spec.scores is not None and spec.keep is not None  # the config checks it
            scores = Scores.load(spec.scores, dataset.fingerprint)
            indices = scores.select(spec.keep, spec.strategy, cfg.seed)
            scoring_seconds = float(scores.metadata.get("seconds") or 0.0)
    if indices is None:
        kept = np.arange(n)
        mode = "full"
    else:
        kept = as_index_array(indices, n)
        mode = "subset"
    sampler = SubsetSampler(kept, shuffle=True, seed=cfg.seed)
    identity = hashlib.sha256(kept.tobytes()).hexdigest()[:16]
    return RunData(sampler, mode, len(kept) / n, len(kept), scoring_seconds, identity)


def _build_proxy(
    spec: ModelConfig | None, dataset: Dataset, device: torch.device
) -> nn.Module | None:
    """Online selection's proxy model (from the current torch RNG), or None without one."""
    from datapruning import user

    if spec is None:
        return None
    try:
        return user.build(spec, dataset).to(device)
    except DataPruningError as exc:  # the message names the model: say it is the proxy
        raise DataPruningError(f"train.data.proxy: {exc}") from None


def _dynamic_plan(plan: StepPlan, sampler: InfoBatchSampler, batch_size: int) -> DynamicStepPlan:
    """``plan`` (the full-data one) with epochs as long as ``sampler`` makes them."""

    def epoch_steps(epoch: int) -> int:
        sampler.set_epoch(epoch)  # a no-op when the loop has set it already
        return math.ceil(len(sampler) / batch_size)

    return DynamicStepPlan(
        plan.steps_per_epoch, plan.total_steps, plan.epochs, plan.warmup_steps, epoch_steps
    )


# What TrainState.state_dict writes and load_state_dict reads back.
_RESUME_KEYS = {"model", "optimizer", "scheduler", "sampler", "progress", "rng"}


def _check_resume(state: dict[str, Any], model: nn.Module, path: Path) -> None:
    """Refuse an incomplete resume state, or one whose weights do not fit the model, before
    the run directory is touched."""
    missing = sorted(_RESUME_KEYS - state.keys())
    weights = state.get("model")
    fits = isinstance(weights, dict) and all(
        key in weights and tuple(getattr(weights[key], "shape", ())) == tuple(value.shape)
        for key, value in model.state_dict().items()
    )
    if missing or not fits:
        what = f"lacks {', '.join(missing)}" if missing else "holds weights of another model"
        raise DataPruningError(
            f"resume checkpoint {str(path)!r} {what}; delete it to start the run over"
        )


def _config_hash(
    dataset: Dataset,
    model_name: str,
    model_params: Mapping[str, Any],
    train_cfg: TrainConfig,
    data: RunData,
    kd: KDSettings | None,
) -> str:
    """What the run computes from, so a resume checkpoint of another run is refused."""
    train_settings = train_cfg.model_dump(mode="json", exclude=_NOT_HASHED)
    identity = {
        "dataset": dataset.fingerprint,
        "model": [model_name, dict(model_params)],
        "train": train_settings,
        "data": data.identity,
        "kd": None
        if kd is None
        else {
            "alpha": kd.alpha,
            "temperature": kd.temperature,
            "teacher": (
                hashlib.sha256(kd.teacher.logits.numpy().tobytes()).hexdigest()[:16]
                if isinstance(kd.teacher, TeacherLogits)
                else f"online:{kd.teacher.identity}"
            ),
        },
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def torch_settings(cfg: TrainConfig) -> Iterator[None]:
    """The run's torch threads and determinism, then the caller's again."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)
