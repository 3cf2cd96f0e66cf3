"""A training run's inputs, resolved and checked before anything is written.

:func:`resolve_run` turns the user's settings (dataset, model, train and KD
config, a subset or a teacher) into one :class:`Run`: the data and its
sampler, the batches, the step plan, the built model (seeded), the algorithms
the settings turn on (:mod:`datapruning.train.algorithms`: KD with its teacher
and alpha resolved, the pruner, InfoBatch, online selection), the
time-to-accuracy targets, device and precision, the run's key (what it
computes from; :data:`NOT_COMPUTING` lists the settings it leaves out) and the
resume state if one is there. Every bad input raises :class:`~datapruning.errors.DataPruningError`
here, so a failed run never touches its directory. :func:`describe` gives the
summary's fields about those inputs. The loop itself
(:mod:`datapruning.train.loop`) only runs a resolved :class:`Run`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from datapruning import __version__
from datapruning._io import read_indices
from datapruning._sections import derive
from datapruning.data.dataset import Dataset
from datapruning.data.infobatch import InfoBatchSampler
from datapruning.data.loaders import Batch, make_batches, make_source_batches
from datapruning.data.samplers import IndexSampler, RS2Sampler, SubsetSampler, as_index_array
from datapruning.errors import DataPruningError
from datapruning.kernels import reset_paths
from datapruning.train import distributed
from datapruning.train.algorithms import Algorithm, build_algorithms
from datapruning.train.augment import Augmenter, resolve_recipe
from datapruning.train.device import (
    Precision,
    check_channels_last,
    check_compile,
    resolve_device,
    resolve_precision,
)
from datapruning.train.distributed import World
from datapruning.train.dynamic import candidate_batch
from datapruning.train.schedule import DynamicStepPlan, StepPlan, plan_steps
from datapruning.train.settings import DataConfig, KDConfig, TrainConfig
from datapruning.train.state import RESUME_NAME, TrainState, forked_rngs, rng_state
from datapruning.train.tta import reference_accuracy, resolve_targets
from datapruning.user import ModelSpec

# Settings that change how a run goes, not what it computes: left out of the run's key,
# so a resume may differ in them.
NOT_COMPUTING = frozenset({"checkpoint_every", "workers"})


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
    # The teacher to distil from (a checkpoint, logits .npy or a module) and KD's settings.
    teacher: str | os.PathLike[str] | nn.Module | None
    kd: KDConfig | None
    targets: dict[str, float]
    reference: float | None
    run_dir: Path | None
    device: torch.device
    precision: Precision
    rng: dict[str, Any]  # the random states right after the model was initialised
    x_test: Tensor
    y_test: Tensor
    progress: bool | None = None
    # Per-batch augmentation with the run's own generator (None: the inputs as they are).
    augmenter: Augmenter | None = None
    # KD, pruning, InfoBatch, online selection: what the run's settings turn on.
    algorithms: list[Algorithm] = field(default_factory=list)
    config_hash: str = ""
    resume: dict[str, Any] | None = None  # a TrainState to continue from
    # The processes the run trains on (one: no DDP), and the model as they train it
    # (DistributedDataParallel around ``model``; ``model`` itself otherwise).
    world: World = field(default_factory=World)
    trained_model: nn.Module | None = None


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

    reset_paths()  # the kernels record what this run's calls run, from here
    world = distributed.join(train_cfg.device)
    train_cfg = _check_world(train_cfg, world)
    device = distributed.rank_device(resolve_device(train_cfg.device), world)
    if world.distributed and train_cfg.sync_bn and device.type != "cuda":
        raise DataPruningError(
            "train.sync_bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); set "
            "train.sync_bn=false on this device: each process then normalises by its share"
        )
    precision = resolve_precision(train_cfg.precision, device)
    if train_cfg.compile:
        check_compile(device)
    data = _data(dataset, train_cfg, indices, device)
    recipe = resolve_recipe(train_cfg.augment, dataset.default_augment, dataset.input_shape)
    teacher, kd = resolve_teacher(teacher, kd)
    reference = reference_accuracy(train_cfg.reference) if train_cfg.reference is not None else None
    # The default model at its width for this device: the record and key say which.
    model_cfg = user.resolve_model(model_cfg, dataset, device)
    model_record = user.record(model_cfg, dataset)
    batches = _batches(dataset, train_cfg, data, device, world)
    plan = plan_steps(train_cfg, len(batches))  # type: ignore[arg-type]
    if isinstance(data.sampler, InfoBatchSampler):  # epochs as long as the sampler makes them
        rank_batch = distributed.per_rank_batch(train_cfg.batch_size, world)
        plan = _dynamic_plan(plan, data.sampler, rank_batch)
    with torch_settings(train_cfg), forked_rngs(device):
        torch.manual_seed(train_cfg.seed)
        # A registered model or a factory's is built under the seed; a module is used as given.
        model = user.build(model_cfg, dataset)
        if world.distributed and train_cfg.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(device)
        rng = rng_state(device)  # fit continues from here: as if it ran right after
    run = Run(
        dataset=dataset,
        cfg=train_cfg,
        model_cfg=model_cfg,
        model_name=model_record["name"],
        model_params=dict(model_record["params"]),
        data=data,
        batches=batches,
        plan=plan,
        model=model,
        teacher=teacher,
        kd=kd,
        targets=resolve_targets(train_cfg.targets, reference),
        reference=reference,
        run_dir=Path(run_dir) if run_dir is not None else None,
        device=device,
        precision=precision,
        rng=rng,
        # Each rank evaluates every world.size-th test example; the loop sums the shares.
        x_test=torch.as_tensor(dataset.x_test[world.rank :: world.size], device=device),
        y_test=torch.as_tensor(dataset.y_test[world.rank :: world.size], device=device),
        progress=progress if world.writes else False,
        # Each rank its own augmentation stream (rank 0's is the one-process run's).
        augmenter=(
            Augmenter(recipe, train_cfg.seed + world.rank, device) if recipe is not None else None
        ),
        world=world,
    )
    _prepare(run)
    return run


def resolve_teacher(
    teacher: str | os.PathLike[str] | nn.Module | None, kd: KDConfig | None
) -> tuple[str | os.PathLike[str] | nn.Module | None, KDConfig | None]:
    """The run's teacher and KD settings: ``teacher`` wins over the config's
    ``kd.teacher`` / ``kd.teacher_logits``; a teacher without settings takes KD's defaults."""
    if teacher is None and kd is not None:
        teacher = kd.teacher if kd.teacher is not None else kd.teacher_logits
    if teacher is not None and kd is None:
        kd = KDConfig()
    return teacher, (kd if teacher is not None else None)


def _prepare(run: Run) -> None:
    """The model's memory format, the algorithms, the run's key and its resume point."""
    if run.cfg.channels_last:
        check_channels_last(run.model, run.model_name)
        run.model = run.model.to(memory_format=torch.channels_last)
    # Bad settings of an algorithm (N:M width, schedule, teacher) fail here, before the
    # run directory is touched.
    run.algorithms = build_algorithms(run)
    if run.cfg.compile:
        # In place: the state_dict keys (checkpoints, pruner names) stay the model's.
        run.model.compile()
    run.trained_model = run.model
    if run.world.distributed:
        # DDP averages the ranks' gradients in the backward pass; checkpoints, evaluation
        # and the algorithms keep using the model itself (its own state_dict keys).
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        run.trained_model = nn.parallel.DistributedDataParallel(run.model, device_ids=device_ids)
    run.config_hash = run_key(run)
    if run.run_dir is not None:
        run.resume = TrainState.read(run.run_dir / RESUME_NAME, run.config_hash)
        if run.resume is not None:
            _check_resume(run.resume, run.model, run.run_dir / RESUME_NAME, run.world)


def _batches(
    dataset: Dataset, cfg: TrainConfig, data: RunData, device: torch.device, world: World
) -> Iterable[Batch]:
    """The loader of the run's batches (the sampler's order, candidate batches when online):
    this rank's share of each global batch."""
    name = "the online candidate batch" if data.candidate_batch else "train.batch_size"
    batch_size = distributed.per_rank_batch(data.candidate_batch or cfg.batch_size, world, name)
    if dataset.streaming:  # read on demand in batches, never the whole set
        return make_source_batches(
            cfg.loader,
            dataset,
            data.sampler,
            batch_size,
            device=device,
            beton=cfg.beton,
            workers=cfg.workers,
        )
    # In-memory batches are sliced on the device; the torch and ffcv loaders copy
    # each batch there (from pinned memory, without blocking the host).
    streaming = cfg.loader != "memory"
    x_train = torch.as_tensor(dataset.x_train, device="cpu" if streaming else device)
    y_train = torch.as_tensor(dataset.y_train, device="cpu" if streaming else device)
    return make_batches(
        cfg.loader,
        x_train,
        y_train,
        data.sampler,
        batch_size,
        dataset=dataset,
        beton=cfg.beton,
        device=device,
        pin_memory=device.type == "cuda",
    )


def describe(
    run: Run, teacher_seconds: float | None, scoring_seconds: float | None
) -> dict[str, Any]:
    """The summary's fields about the run's inputs (data, costs, config); an algorithm
    adds its own in fit (KD: ``kd``, ``kd_teacher``, ``teacher_logits_seconds``)."""
    data, dataset = run.data, run.dataset
    return {
        "model": run.model_name,
        "data_mode": data.mode,
        "num_train_examples": data.examples_per_epoch,
        "kept_fraction": data.kept_fraction,
        "kd": None,
        "kd_teacher": None,
        "augment": run.augmenter.recipe.name if run.augmenter is not None else None,
        "reference_acc": run.reference,
        "teacher_seconds": float(teacher_seconds or 0.0),
        "teacher_logits_seconds": 0.0,
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
        "distributed": {
            "world_size": run.world.size,
            "backend": run.world.backend,
            "per_rank_batch": run.cfg.batch_size // run.world.size,
        },
    }


def _data(
    dataset: Dataset, cfg: TrainConfig, indices: np.ndarray | None, device: torch.device
) -> RunData:
    """The run's sampler: all examples, a fixed subset, RS2, InfoBatch or online candidates."""
    n = dataset.num_train
    spec: DataConfig = cfg.data
    if indices is not None and spec.mode != "full":
        raise DataPruningError(
            f"indices were given but train.data.mode is {spec.mode}; give the data once"
        )
    if spec.mode in ("infobatch", "online"):
        return _dynamic_data(n, cfg, device)
    if spec.mode == "rs2":
        assert spec.fraction is not None  # the config checks it
        sampler = RS2Sampler(
            n,
            spec.fraction,
            replacement=spec.replacement,
            stratify=dataset.y_train if spec.stratify else None,
            seed=cfg.seed,
        )
        kind = "with" if spec.replacement else "without"
        identity = f"rs2:{spec.fraction}:{kind}:{spec.stratify}"
        return RunData(sampler, "rs2", spec.fraction, sampler.epoch_size, identity=identity)
    scoring_seconds = None
    if spec.mode == "subset":
        if spec.indices is not None:
            from datapruning.scores import check_selection, read_selection

            indices = read_indices(spec.indices)
            # `datapruning select`'s sidecar: the scoring behind these indices, to charge.
            selection = read_selection(spec.indices)
            if selection is not None:
                check_selection(selection, spec.indices, dataset.fingerprint)
                scoring_seconds = float(selection["scoring_seconds"])
        else:
            from datapruning.scores import Scores

            assert spec.scores is not None and spec.keep is not None  # the config checks it
            scores = Scores.load(spec.scores, dataset.fingerprint)
            indices = scores.select(spec.keep, spec.strategy, cfg.seed)
            scoring_seconds = float(scores.metadata.get("seconds") or 0.0)
    kept = np.arange(n) if indices is None else as_index_array(indices, n)
    mode = "full" if indices is None else "subset"
    identity = hashlib.sha256(kept.tobytes()).hexdigest()[:16]
    sampler = SubsetSampler(kept, shuffle=True, seed=cfg.seed)
    return RunData(sampler, mode, len(kept) / n, len(kept), scoring_seconds, identity)


def _dynamic_data(n: int, cfg: TrainConfig, device: torch.device) -> RunData:
    """InfoBatch's sampler, or online selection's candidates: every example stays
    available (kept_fraction 1: alpha "auto" as for full data)."""
    spec = cfg.data
    if spec.mode == "infobatch":
        assert spec.prune is not None and spec.anneal is not None  # the config fills them in
        if cfg.steps is not None:
            raise DataPruningError(
                f"train.steps={cfg.steps} with train.data.mode infobatch: InfoBatch prunes "
                "whole epochs, so give train.epochs and drop train.steps"
            )
        sampler = InfoBatchSampler(
            n, cfg.epochs, spec.prune, spec.anneal, seed=cfg.seed, device=device
        )
        identity = f"infobatch:{spec.prune}:{spec.anneal}"
        return RunData(sampler, "infobatch", 1.0, n, identity=identity)
    assert spec.keep is not None  # the config checks it
    return RunData(
        SubsetSampler(np.arange(n), shuffle=True, seed=cfg.seed),
        "online",
        1.0,
        n,
        identity=f"online:{spec.keep}",
        candidate_batch=candidate_batch(cfg.batch_size, spec.keep),
        online_keep=spec.keep,
    )


def _dynamic_plan(plan: StepPlan, sampler: InfoBatchSampler, batch_size: int) -> DynamicStepPlan:
    """``plan`` (the full-data one) with epochs as long as ``sampler`` makes them."""

    def epoch_steps(epoch: int) -> int:
        sampler.set_epoch(epoch)  # a no-op when the loop has set it already
        return math.ceil(len(sampler) / batch_size)

    return DynamicStepPlan(
        plan.steps_per_epoch, plan.total_steps, plan.epochs, plan.warmup_steps, epoch_steps
    )


# What TrainState.state_dict writes and load_state_dict reads back.
_RESUME_KEYS = {"model", "optimizer", "scheduler", "sampler", "progress", "rng", "algorithms"}


def _check_resume(state: dict[str, Any], model: nn.Module, path: Path, world: World) -> None:
    """Refuse an incomplete resume state, or one whose weights do not fit the model, before
    the run directory is touched."""
    missing = sorted(_RESUME_KEYS - state.keys())
    if world.distributed and len(state.get("ranks") or ()) != world.size:
        missing.append(f"the state of each of {world.size} processes")
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


def _check_world(cfg: TrainConfig, world: World) -> TrainConfig:
    """``cfg`` with ``nproc`` the processes the run really has (torchrun's count)."""
    if not world.distributed:
        if cfg.nproc > 1:
            raise DataPruningError(
                f"train.nproc is {cfg.nproc} but this process was not started by torchrun; "
                f"run `datapruning train CONFIG --nproc {cfg.nproc}` (or torchrun), or set "
                "train.nproc=1"
            )
        return cfg
    if cfg.nproc not in (1, world.size):
        raise DataPruningError(
            f"train.nproc is {cfg.nproc} but torchrun started {world.size} processes; make "
            "them agree"
        )
    if cfg.record.forgetting or cfg.record.aum or cfg.record.el2n_epochs:
        raise DataPruningError(
            "train.record needs the whole run in one process (each process sees its share "
            "of the examples); record on a one-process run, or turn train.record off"
        )
    return derive(cfg, nproc=world.size)


def run_key(run: Run) -> str:
    """What the run computes from: a resume point of another run is refused by it."""
    identity = {
        "dataset": run.dataset.fingerprint,
        "model": [run.model_name, dict(run.model_params)],
        "train": run.cfg.model_dump(mode="json", exclude=set(NOT_COMPUTING)),
        "data": run.data.identity,
        "algorithms": {a.name: a.identity() for a in run.algorithms},
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
