"""The training loop shared by teacher, scoring and student runs.

SGD with (Nesterov) momentum, an optional linear warm-up, and a cosine learning
rate over the steps actually taken, so a run on a subset (or RS2, or a fixed
step budget) anneals fully in its own steps. The data is the full training
set, a fixed subset, or RS2 (a fresh random subset every epoch); the loss is
cross-entropy or knowledge distillation from a teacher. The time-to-accuracy
clock counts training only; evaluation runs every ``eval_every`` epochs and is
timed apart. A run directory receives ``metrics.jsonl`` (one line per
evaluation), ``summary.json`` and ``checkpoint.pt``; with ``checkpoint_every``
it also holds ``resume.pt`` while the run is unfinished, and the same call
continues from it after a crash, ending with the same weights bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from datapruning import __version__
from datapruning._io import read_indices, write_json
from datapruning.config import DataConfig, KDConfig, ModelConfig, TrainConfig
from datapruning.data.loaders import make_batches
from datapruning.data.samplers import IndexSampler, RS2Sampler, SubsetSampler, as_index_array
from datapruning.data.sources import Dataset
from datapruning.errors import DataPruningError
from datapruning.train.checkpoint import CHECKPOINT_NAME, save_checkpoint
from datapruning.train.kd import kd_loss, resolve_alpha, teacher_logits
from datapruning.train.sparsity import MagnitudePruner, build_pruner, export_sparse
from datapruning.train.tta import (
    Stopwatch,
    reference_accuracy,
    resolve_targets,
    time_to_accuracy,
)

METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
RESUME_NAME = "resume.pt"
# Settings that do not change what a run computes: a resume may differ in them.
_NOT_HASHED = {"checkpoint_every"}


@dataclass
class TrainResult:
    model: nn.Module
    summary: dict[str, Any]
    run_dir: Path | None


@dataclass
class _Data:
    """The sampler of one run and what the summary says about it."""

    sampler: IndexSampler
    mode: str
    kept_fraction: float
    examples_per_epoch: int
    scoring_seconds: float | None = None
    identity: str = ""


@dataclass
class StepPlan:
    """How many steps a run takes and how its learning rate moves (shared with scoring)."""

    steps_per_epoch: int
    total_steps: int
    epochs: int
    warmup_steps: int

    def lr_factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay = self.total_steps - self.warmup_steps
        progress = min(step - self.warmup_steps, decay) / decay
        return 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class _Progress:
    """Everything a resume checkpoint restores besides model and optimizer."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of ``epoch`` already taken
    loss_sum: float = 0.0
    seen: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    curve: list[tuple[float, float]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)


def train(
    dataset: Dataset,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    indices: np.ndarray | None = None,
    teacher: str | os.PathLike[str] | nn.Module | None = None,
    kd: KDConfig | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    extra_summary: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    teacher_seconds: float | None = None,
    scoring_seconds: float | None = None,
) -> TrainResult:
    """Train one model and return it with its summary.

    Args:
        dataset: the data; the test split is used for evaluation.
        model_cfg: which registered model to build (None: the dataset's default).
        train_cfg: optimisation, data mode, evaluation, clock and resume settings.
        indices: train only on these training-set indices (overrides ``train_cfg.data``,
            which must then be ``full``).
        teacher: a checkpoint path, a ``.npy`` of logits, or a model to distil from
            (default: ``kd.teacher`` or ``kd.teacher_logits``).
        kd: distillation settings; without a teacher anywhere, no distillation.
        run_dir: where to write metrics.jsonl, summary.json and checkpoint.pt (and
            resume.pt with ``train_cfg.checkpoint_every``); an unfinished run there
            with the same settings is continued.
        extra_summary: fields copied into summary.json (recipe name, ...).
        progress: show a progress bar (None: only on a terminal).
        teacher_seconds: the teacher's training time, for end-to-end time in the summary.
        scoring_seconds: the scoring time behind the subset (default: read from the
            scores file of ``train_cfg.data``, else 0).
    """
    from datapruning.models import build_model

    device = torch.device(train_cfg.device)
    # Everything that can be wrong with the input fails here, before the run
    # directory is touched.
    data = _data(dataset, train_cfg, indices)
    if teacher is None and kd is not None:
        teacher = kd.teacher if kd.teacher is not None else kd.teacher_logits
    if teacher is not None and kd is None:
        kd = KDConfig()
    teacher_info = (
        teacher_logits(teacher, dataset, cache=kd.cache_logits if kd else True)
        if teacher is not None
        else None
    )
    alpha = resolve_alpha(kd.alpha, data.kept_fraction) if teacher_info and kd else None
    reference = reference_accuracy(train_cfg.reference) if train_cfg.reference is not None else None
    targets = resolve_targets(train_cfg.targets, reference)
    model_name = model_cfg.name or dataset.default_model
    x_train = torch.as_tensor(dataset.x_train, device=device)
    y_train = torch.as_tensor(dataset.y_train, device=device)
    batches = make_batches(
        train_cfg.loader,
        x_train,
        y_train,
        data.sampler,
        train_cfg.batch_size,
        dataset=dataset,
        beton=train_cfg.beton,
    )
    plan = plan_steps(train_cfg, len(batches))
    config_hash = _config_hash(
        dataset, model_name, model_cfg, train_cfg, data, teacher_info, kd, alpha
    )
    run_path = Path(run_dir) if run_dir is not None else None
    resume = _load_resume(run_path, config_hash) if run_path is not None else None

    logits = teacher_info.logits.to(device) if teacher_info is not None else None
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    if train_cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    # Seed inside forked RNGs so a run is reproducible and leaves the caller's
    # random states untouched.
    try:
        with torch.random.fork_rng(devices=[]), _fork_host_rngs():
            torch.manual_seed(train_cfg.seed)
            model = build_model(
                model_name, dataset.input_shape, dataset.num_classes, **model_cfg.params
            ).to(device)
            # Bad sparsity settings (N:M width, schedule) fail here, before the run dir is touched.
            pruner = build_pruner(model, train_cfg.sparsity, plan.total_steps)
            if run_path is not None:
                run_path.mkdir(parents=True, exist_ok=True)
                # summary.json marks a finished run; a rerun is unfinished until it ends.
                (run_path / SUMMARY_NAME).unlink(missing_ok=True)
            summary = _fit(
                model,
                dataset,
                train_cfg,
                plan,
                batches,
                data.sampler,
                logits,
                (alpha, kd.temperature) if alpha is not None and kd is not None else None,
                targets,
                run_path,
                device,
                progress,
                config_hash,
                resume,
                pruner,
            )
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)

    kd_summary = None
    if alpha is not None and kd is not None and teacher_info is not None:
        kd_summary = {"alpha": alpha, "temperature": kd.temperature}
        if kd.alpha == "auto":
            kd_summary["alpha_rule"] = "auto"
        kd_summary["teacher"] = teacher_info.source
        kd_summary["cached_logits"] = teacher_info.cached
    costs = {
        "teacher_seconds": float(teacher_seconds or 0.0),
        "teacher_logits_seconds": teacher_info.seconds if teacher_info else 0.0,
        "scoring_seconds": float(
            scoring_seconds if scoring_seconds is not None else data.scoring_seconds or 0.0
        ),
    }
    summary.update(
        {
            "model": model_name,
            "data_mode": data.mode,
            "num_train_examples": data.examples_per_epoch,
            "kept_fraction": data.kept_fraction,
            "kd": kd_summary,
            "reference_acc": reference,
            **costs,
            "dataset": {
                "name": dataset.name,
                "params": dict(dataset.params),
                "fingerprint": dataset.fingerprint,
            },
            "config": {
                "model": {"name": model_name, "params": model_cfg.params},
                "train": train_cfg.model_dump(mode="json"),
            },
            "config_hash": config_hash,
            "version": __version__,
            **dict(extra_summary or {}),
        }
    )
    # Student-only time is train_seconds; end to end adds whatever had to run first.
    summary["end_to_end_seconds"] = summary["train_seconds"] + sum(
        float(summary.get(key) or 0.0)
        for key in ("teacher_seconds", "teacher_logits_seconds", "scoring_seconds")
    )
    if run_path is not None:
        save_checkpoint(
            run_path / CHECKPOINT_NAME,
            {
                "model": model_name,
                "model_params": dict(model_cfg.params),
                "input_shape": list(dataset.input_shape),
                "num_classes": dataset.num_classes,
                "dataset_fingerprint": dataset.fingerprint,
                "state_dict": export_sparse(model, pruner),
                "epochs": summary["epochs"],
                "steps": summary["steps"],
            },
        )
        write_json(run_path / SUMMARY_NAME, summary)
        (run_path / RESUME_NAME).unlink(missing_ok=True)
    return TrainResult(model=model, summary=summary, run_dir=run_path)


def _data(dataset: Dataset, cfg: TrainConfig, indices: np.ndarray | None) -> _Data:
    """The run's sampler: all examples, a fixed subset, or RS2."""
    n = dataset.num_train
    spec: DataConfig = cfg.data
    if indices is not None and spec.mode != "full":
        raise DataPruningError(
            f"indices were given but train.data.mode is {spec.mode}; give the data once"
        )
    scoring_seconds = None
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
        return _Data(
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
    return _Data(sampler, mode, len(kept) / n, len(kept), scoring_seconds, identity)


def plan_steps(
    cfg: TrainConfig, steps_per_epoch: int, raise_hint: str = "train.steps or train.epochs"
) -> StepPlan:
    """The run's step count and LR schedule; ``raise_hint`` names what to raise if too short."""
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if total <= warmup:
        budget = f"train.steps={cfg.steps}" if cfg.steps is not None else f"{total} steps"
        raise DataPruningError(
            f"{budget} leaves no steps after the {warmup}-step warm-up "
            f"(train.warmup_epochs={cfg.warmup_epochs:g} x {steps_per_epoch} steps per epoch); "
            f"raise {raise_hint}, or lower train.warmup_epochs"
        )
    return StepPlan(steps_per_epoch, total, math.ceil(total / steps_per_epoch), warmup)


def _config_hash(
    dataset: Dataset,
    model_name: str,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data: _Data,
    teacher_info: Any,
    kd: KDConfig | None,
    alpha: float | None,
) -> str:
    """What the run computes from, so a resume checkpoint of another run is refused."""
    train_settings = train_cfg.model_dump(mode="json", exclude=_NOT_HASHED)
    identity = {
        "dataset": dataset.fingerprint,
        "model": [model_name, model_cfg.params],
        "train": train_settings,
        "data": data.identity,
        "kd": None
        if teacher_info is None or kd is None
        else {
            "alpha": alpha,
            "temperature": kd.temperature,
            "teacher": hashlib.sha256(teacher_info.logits.numpy().tobytes()).hexdigest()[:16],
        },
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _load_resume(run_path: Path, config_hash: str) -> dict[str, Any] | None:
    path = run_path / RESUME_NAME
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise DataPruningError(
            f"resume checkpoint {str(path)!r} cannot be read ({exc.__class__.__name__}); "
            "delete it to start the run over"
        ) from None
    if not isinstance(state, dict) or state.get("config_hash") != config_hash:
        found = state.get("config_hash") if isinstance(state, dict) else None
        raise DataPruningError(
            f"{str(path)!r} is from a run with a different config ({found} != {config_hash}); "
            f"rerun with the same settings, or use another run directory"
        )
    return state


@contextmanager
def _fork_host_rngs() -> Iterator[None]:
    """Restore numpy's and Python's global random states on exit, like torch's fork_rng."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.as_tensor(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _fit(
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainConfig,
    plan: StepPlan,
    batches: Any,
    sampler: IndexSampler,
    teacher_logits: torch.Tensor | None,
    kd: tuple[float, float] | None,
    targets: dict[str, float],
    run_path: Path | None,
    device: torch.device,
    progress: bool | None,
    config_hash: str,
    resume: dict[str, Any] | None,
    pruner: MagnitudePruner | None = None,
) -> dict[str, Any]:
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, plan.lr_factor)
    x_test = torch.as_tensor(dataset.x_test, device=device)
    y_test = torch.as_tensor(dataset.y_test, device=device)

    state = _Progress()
    resume_step = None
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        sampler.load_state_dict(resume["sampler"])
        if pruner is not None:  # masks and schedule position
            pruner.load_state_dict(resume["pruner"])
        state = _Progress(**json.loads(resume["progress"]))
        state.curve = [tuple(point) for point in state.curve]  # type: ignore[misc]
        _set_rng_state(resume["rng"])
        resume_step = state.step
    train_clock, eval_clock = Stopwatch(), Stopwatch()
    train_clock.seconds, eval_clock.seconds = state.train_seconds, state.eval_seconds

    def save_resume(epoch: int, batch: int) -> None:
        if run_path is None:
            return
        state.epoch, state.batch = epoch, batch
        state.train_seconds, state.eval_seconds = train_clock.seconds, eval_clock.seconds
        save_checkpoint(
            run_path / RESUME_NAME,
            {
                "config_hash": config_hash,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "sampler": sampler.state_dict(),
                "pruner": pruner.state_dict() if pruner is not None else None,
                "progress": json.dumps(state.__dict__),
                "rng": _rng_state(),
            },
        )

    log = (run_path / METRICS_NAME).open("w") if run_path is not None else None
    if log is not None:  # the lines logged before the resume point, none after it
        log.writelines(json.dumps(line) + "\n" for line in state.lines)
        log.flush()
    try:
        bar = tqdm(
            total=plan.total_steps,
            initial=state.step,
            desc="train",
            unit="step",
            disable=_hide(progress),
            leave=False,
        )
        for epoch in range(state.epoch, plan.epochs):
            sampler.set_epoch(epoch)
            model.train()
            skip, state.batch = (state.batch, 0) if epoch == state.epoch else (0, 0)
            if not skip:
                state.loss_sum, state.seen = 0.0, 0
            loss_sum = torch.tensor(state.loss_sum, dtype=torch.float64)
            batch_iter = iter(batches)
            for _ in range(skip):  # a resumed epoch: the batches already taken
                next(batch_iter)
            checkpoint_due = False
            for batch in range(skip, plan.steps_per_epoch):
                if state.step >= plan.total_steps:
                    break
                with train_clock.running():
                    x, y, index = next(batch_iter)
                    logits = model(x)
                    if teacher_logits is not None and kd is not None:
                        loss = kd_loss(logits, y, teacher_logits[index], kd[0], kd[1])
                    else:
                        loss = F.cross_entropy(logits, y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if pruner is not None:  # pruned weights back to exactly zero
                        pruner.step(state.step + 1, optimizer)
                    scheduler.step()
                    loss_sum += loss.detach().double() * len(y)
                state.seen += len(y)
                state.step += 1
                bar.update()
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    if batch + 1 < plan.steps_per_epoch and state.step < plan.total_steps:
                        state.loss_sum = float(loss_sum)
                        save_resume(epoch, batch + 1)
                    else:  # an epoch's last step: save after its evaluation
                        checkpoint_due = True
            state.loss_sum = float(loss_sum)
            finished = state.step >= plan.total_steps
            if finished or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
                with eval_clock.running():
                    test_loss, test_acc = evaluate(model, x_test, y_test, cfg.batch_size)
                state.curve.append((train_clock.seconds, test_acc))
                line = {
                    "epoch": epoch + 1,
                    "step": state.step,
                    "train_seconds": round(train_clock.seconds, 4),
                    "eval_seconds": round(eval_clock.seconds, 4),
                    "train_loss": state.loss_sum / max(state.seen, 1),
                    "test_loss": test_loss,
                    "test_acc": test_acc,
                    "lr": scheduler.get_last_lr()[0],
                }
                state.lines.append(line)
                if log is not None:
                    log.write(json.dumps(line) + "\n")
                    log.flush()
                bar.set_postfix(acc=f"{test_acc:.3f}")
            if checkpoint_due and not finished:
                save_resume(epoch + 1, 0)
            if finished:
                break
        bar.close()
    finally:
        if log is not None:
            log.close()
    accuracies = [acc for _, acc in state.curve]
    last = state.lines[-1]
    return {
        "final_test_acc": accuracies[-1],
        "best_test_acc": max(accuracies),
        "final_test_loss": last["test_loss"],
        "train_seconds": train_clock.seconds,
        "eval_seconds": eval_clock.seconds,
        "epochs": plan.epochs,
        "steps": state.step,
        "steps_per_epoch": plan.steps_per_epoch,
        "warmup_steps": plan.warmup_steps,
        "targets": targets,
        "time_to_accuracy": time_to_accuracy(state.curve, targets),
        "resumed_from_step": resume_step,
        "sparsity": pruner.report() if pruner is not None else None,
    }


def _hide(progress: bool | None) -> bool | None:
    # tqdm treats disable=None as "hide unless stderr is a terminal".
    return None if progress is None else not progress


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """``modules`` in eval mode (dropout off, batch norm on running stats), then as they were."""
    was_training = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, was_training, strict=True):
            module.train(mode)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for ``x`` in eval mode, in batches."""
    with eval_mode(model):
        return torch.cat([model(chunk) for chunk in x.split(batch_size)])


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    logits = predict(model, x, max(batch_size, 256))
    loss = F.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy
