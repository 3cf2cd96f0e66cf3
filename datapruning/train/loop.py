"""The training loop shared by teacher, scoring and student runs.

SGD with (Nesterov) momentum and a cosine learning rate over the steps actually
taken, so a run on a subset anneals fully in its fewer steps. Optionally trains
on a subset of indices and distils from a teacher. The time-to-accuracy clock
counts training only; evaluation runs every ``eval_every`` epochs and is timed
apart. A run directory receives ``metrics.jsonl`` (one line per evaluation),
``summary.json`` and ``checkpoint.pt``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from datapruning import __version__
from datapruning._io import write_json
from datapruning.config import KDConfig, ModelConfig, TrainConfig
from datapruning.data.loaders import make_batches
from datapruning.data.samplers import SubsetSampler, as_index_array
from datapruning.data.sources import Dataset
from datapruning.errors import DataPruningError
from datapruning.train.checkpoint import CHECKPOINT_NAME, load_model, save_checkpoint
from datapruning.train.kd import kd_loss
from datapruning.train.sparsity import MagnitudePruner, build_pruner, export_sparse
from datapruning.train.tta import Stopwatch, time_to_accuracy

METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"


@dataclass
class TrainResult:
    model: nn.Module
    summary: dict[str, Any]
    run_dir: Path | None


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
) -> TrainResult:
    """Train one model and return it with its summary.

    Args:
        dataset: the data; the test split is used for evaluation.
        model_cfg: which registered model to build (None: the dataset's default).
        train_cfg: optimisation, evaluation and clock settings.
        indices: train only on these training-set indices (default: all).
        teacher: a checkpoint path or model to distil from; needs ``kd``.
        kd: distillation weights; ignored without a teacher.
        run_dir: where to write metrics.jsonl, summary.json and checkpoint.pt.
        extra_summary: fields copied into summary.json (recipe name, costs, ...).
        progress: show a progress bar (None: only on a terminal).
    """
    from models import build_model

    device = torch.device(train_cfg.device)
    indices = (
        np.arange(dataset.num_train)
        if indices is None
        else as_index_array(indices, dataset.num_train)
    )
    if teacher is not None and kd is None:
        kd = KDConfig()
    model_name = model_cfg.name or dataset.default_model
    x_train = torch.as_tensor(dataset.x_train, device=device)
    y_train = torch.as_tensor(dataset.y_train, device=device)
    # A wrong teacher fails here, before the run directory is touched.
    teacher_logits = _teacher_logits(teacher, dataset, x_train) if teacher is not None else None
    run_path = Path(run_dir) if run_dir is not None else None

    previous_threads = torch.get_num_threads()
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    # Seed inside a forked RNG so a run is reproducible and leaves the caller's
    # torch random state untouched.
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train_cfg.seed)
            model = build_model(
                model_name, dataset.input_shape, dataset.num_classes, **model_cfg.params
            ).to(device)
            sampler = SubsetSampler(indices, shuffle=True, seed=train_cfg.seed)
            batches = make_batches(
                train_cfg.loader, x_train, y_train, sampler, train_cfg.batch_size
            )
            # Bad sparsity settings (N:M width, schedule) fail here, before the run dir is touched.
            pruner = build_pruner(model, train_cfg.sparsity, train_cfg.epochs * len(batches))
            if run_path is not None:
                run_path.mkdir(parents=True, exist_ok=True)
                # summary.json marks a finished run; a rerun is unfinished until it ends.
                (run_path / SUMMARY_NAME).unlink(missing_ok=True)
            summary = _fit(
                model,
                dataset,
                train_cfg,
                batches,
                sampler,
                teacher_logits,
                kd,
                run_path,
                device,
                progress,
                pruner,
            )
    finally:
        torch.set_num_threads(previous_threads)

    summary.update(
        {
            "model": model_name,
            "num_train_examples": len(indices),
            "kept_fraction": len(indices) / dataset.num_train,
            "kd": kd.model_dump() if teacher_logits is not None and kd is not None else None,
            "dataset": {
                "name": dataset.name,
                "params": dict(dataset.params),
                "fingerprint": dataset.fingerprint,
            },
            "config": {
                "model": {"name": model_name, "params": model_cfg.params},
                "train": train_cfg.model_dump(mode="json"),
            },
            "version": __version__,
            **dict(extra_summary or {}),
        }
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
    return TrainResult(model=model, summary=summary, run_dir=run_path)


def _fit(
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainConfig,
    batches: Any,
    sampler: SubsetSampler,
    teacher_logits: torch.Tensor | None,
    kd: KDConfig | None,
    run_path: Path | None,
    device: torch.device,
    progress: bool | None,
    pruner: MagnitudePruner | None = None,
) -> dict[str, Any]:
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )
    total_steps = cfg.epochs * len(batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    x_test = torch.as_tensor(dataset.x_test, device=device)
    y_test = torch.as_tensor(dataset.y_test, device=device)

    train_clock, eval_clock = Stopwatch(), Stopwatch()
    curve: list[tuple[float, float]] = []
    log = (run_path / METRICS_NAME).open("w") if run_path is not None else None
    step, last_eval = 0, None
    try:
        bar = tqdm(
            range(cfg.epochs), desc="train", unit="epoch", disable=_hide(progress), leave=False
        )
        for epoch in bar:
            sampler.set_epoch(epoch)
            model.train()
            loss_sum, seen = torch.zeros((), device=device), 0
            with train_clock.running():
                for x, y, index in batches:
                    logits = model(x)
                    if teacher_logits is not None and kd is not None:
                        loss = kd_loss(logits, y, teacher_logits[index], kd.alpha, kd.temperature)
                    else:
                        loss = F.cross_entropy(logits, y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if pruner is not None:
                        pruner.step(step + 1, optimizer)
                    scheduler.step()
                    loss_sum += loss.detach() * len(y)
                    seen += len(y)
                    step += 1
            last_epoch = epoch + 1 == cfg.epochs
            if last_epoch or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
                with eval_clock.running():
                    test_loss, test_acc = evaluate(model, x_test, y_test, cfg.batch_size)
                curve.append((train_clock.seconds, test_acc))
                last_eval = {
                    "epoch": epoch + 1,
                    "step": step,
                    "train_seconds": round(train_clock.seconds, 4),
                    "eval_seconds": round(eval_clock.seconds, 4),
                    "train_loss": float(loss_sum) / max(seen, 1),
                    "test_loss": test_loss,
                    "test_acc": test_acc,
                    "lr": scheduler.get_last_lr()[0],
                }
                if log is not None:
                    log.write(json.dumps(last_eval) + "\n")
                    log.flush()
                bar.set_postfix(acc=f"{test_acc:.3f}")
    finally:
        if log is not None:
            log.close()
    accuracies = [acc for _, acc in curve]
    return {
        "final_test_acc": accuracies[-1],
        "best_test_acc": max(accuracies),
        "final_test_loss": last_eval["test_loss"] if last_eval else None,
        "train_seconds": train_clock.seconds,
        "eval_seconds": eval_clock.seconds,
        "epochs": cfg.epochs,
        "steps": step,
        "time_to_accuracy": time_to_accuracy(curve, cfg.targets),
        "sparsity": pruner.report() if pruner is not None else None,
    }


def _hide(progress: bool | None) -> bool | None:
    # tqdm treats disable=None as "hide unless stderr is a terminal".
    return None if progress is None else not progress


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for ``x`` in eval mode, in batches."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(chunk) for chunk in x.split(batch_size)])
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    logits = predict(model, x, max(batch_size, 256))
    loss = F.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy


def _teacher_logits(
    teacher: str | os.PathLike[str] | nn.Module, dataset: Dataset, x_train: torch.Tensor
) -> torch.Tensor:
    # Inputs are not augmented, so the teacher's logits on the training set are
    # computed once and looked up by example index at every step.
    if not isinstance(teacher, nn.Module):
        teacher = load_model(
            teacher, fingerprint=dataset.fingerprint, num_classes=dataset.num_classes
        )
    teacher = teacher.to(x_train.device)
    logits = predict(teacher, x_train)
    if logits.shape[1] != dataset.num_classes:
        raise DataPruningError(
            f"teacher predicts {logits.shape[1]} classes; this dataset has {dataset.num_classes}"
        )
    return logits
