"""Knowledge distillation loss (Hinton et al. 2015).

loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))

The T^2 factor keeps the soft-target gradients on the same scale as the hard
ones when T changes. The loss is computed per example (the loop reduces it,
optionally weighting examples), so a sampler that records or re-weights
examples sees each one's loss.

The per-example loss has one definition, the torch reference of the fused
kernel (:func:`datapruning.kernels.kd_loss.kd_loss_reference`), re-exported
here as :func:`per_example_kd_loss`; the loop calls the kernel's dispatcher
(:func:`datapruning.kernels.kd_loss.kd_loss`: Triton on CUDA, that reference
on CPU). This module holds the rest of distillation: alpha and the teacher's
logits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from datapruning._io import file_hash, write_json, write_npy
from datapruning.data.dataset import Dataset
from datapruning.data.fingerprint import check_current
from datapruning.data.stream import train_rows
from datapruning.errors import DataPruningError
from datapruning.kernels.kd_loss import kd_loss_reference as per_example_kd_loss
from datapruning.train.evaluation import predict

__all__ = [
    "OnlineTeacher",
    "TeacherLogits",
    "auto_alpha",
    "mean_kd_loss",
    "online_teacher",
    "per_example_kd_loss",
    "resolve_alpha",
    "teacher_logits",
]


def mean_kd_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """The batch mean of :func:`per_example_kd_loss` (teacher rows aligned with the batch)."""
    return per_example_kd_loss(
        student_logits, targets, teacher_logits, alpha=alpha, temperature=temperature
    ).mean()


def auto_alpha(kept_fraction: float) -> float:
    """The KD weight for a student trained on ``kept_fraction`` of the data (``alpha: auto``).

    alpha = 0.5 - 0.25 * kept_fraction: 0.475 at 10% of the data, 0.425 at 30%,
    0.25 on all of it. Ben-Baruch et al. (2024) find the best alpha grows as
    less data is kept; on MNIST-1D (docs/kd_alpha.md) the best alphas lay in
    [0.25, 0.5] at every kept fraction, with 0.5 best on small subsets and
    alpha >= 0.75 worse, so the rule slopes gently inside that band.
    """
    if not 0 < kept_fraction <= 1:
        raise DataPruningError(f"kept fraction {kept_fraction} must lie in (0, 1]")
    return 0.5 - 0.25 * kept_fraction


def resolve_alpha(alpha: float | str, kept_fraction: float) -> float:
    return auto_alpha(kept_fraction) if alpha == "auto" else float(alpha)


@dataclass
class TeacherLogits:
    """A teacher's logits on every training example, and where they came from."""

    logits: torch.Tensor
    source: str
    # Seconds spent running the teacher now (0 when read from a cache or a file).
    seconds: float
    cached: bool


def teacher_logits(
    teacher: str | os.PathLike[str] | nn.Module,
    dataset: Dataset,
    *,
    cache: bool = True,
    batch_size: int = 1024,
) -> TeacherLogits:
    """The teacher's logits on ``dataset``'s training inputs.

    ``teacher`` is a module, a checkpoint (run directory or .pt) of any
    registered model trained on this dataset, or a ``.npy`` of precomputed
    logits. Inputs are not augmented, so the logits are computed once per run;
    with ``cache`` a checkpoint's logits are also saved beside it, keyed by the
    dataset fingerprint and the checkpoint's hash, and reused by later runs.
    """
    from datapruning.train.checkpoint import CHECKPOINT_NAME, load_model

    x_train = train_rows(dataset)  # a streaming set is read in batches
    if isinstance(teacher, nn.Module):
        start = time.perf_counter()
        device = next(teacher.parameters()).device
        logits = predict(teacher, x_train.to(device), batch_size).cpu()
        result = TeacherLogits(logits, "module", time.perf_counter() - start, False)
    else:
        path = Path(teacher)
        if path.suffix == ".npy":
            result = TeacherLogits(_load_logits(path, dataset), str(path), 0.0, False)
        else:
            checkpoint = path / CHECKPOINT_NAME if path.is_dir() else path
            model = load_model(
                checkpoint, fingerprint=dataset.fingerprint, num_classes=dataset.num_classes
            )
            cache_path = checkpoint.parent / (
                f"teacher_logits-{dataset.fingerprint.replace(':', '-')}-{file_hash(checkpoint)}.npy"
            )
            # A cache from before logits carried their sidecar is recomputed once.
            if cache and cache_path.is_file() and logits_sidecar(cache_path).is_file():
                result = TeacherLogits(
                    _load_logits(cache_path, dataset), str(cache_path), 0.0, True
                )
            else:
                start = time.perf_counter()
                logits = predict(model, x_train, batch_size)
                result = TeacherLogits(logits, str(checkpoint), time.perf_counter() - start, False)
                if cache:
                    # A read-only teacher directory: the run goes on uncached.
                    with contextlib.suppress(OSError, DataPruningError):
                        save_teacher_logits(cache_path, logits, dataset)
    shape = tuple(result.logits.shape)
    if shape != (dataset.num_train, dataset.num_classes):
        raise DataPruningError(
            f"teacher logits from {result.source!r} have shape {shape}; this dataset needs "
            f"({dataset.num_train}, {dataset.num_classes}): one row per training example and "
            "one column per class"
        )
    return result


@dataclass
class OnlineTeacher:
    """A teacher model run on every (augmented) training batch instead of cached logits."""

    model: nn.Module
    source: str
    identity: str  # what the run's config hash records about it


def online_teacher(
    teacher: str | os.PathLike[str] | nn.Module, dataset: Dataset, device: torch.device
) -> OnlineTeacher:
    """The teacher as a model on ``device`` in eval mode, for KD with augmentation.

    Augmented inputs differ every step, so logits cached once per example no longer
    match them; ``teacher`` must be a module or a checkpoint (run directory or .pt).
    """
    from datapruning.train.checkpoint import CHECKPOINT_NAME, load_model

    if isinstance(teacher, nn.Module):
        model, source = teacher, "module"
        digest = hashlib.sha256()
        for name, value in model.state_dict().items():
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        identity = digest.hexdigest()[:16]
    else:
        path = Path(teacher)
        if path.suffix == ".npy":
            raise DataPruningError(
                f"teacher logits {str(path)!r} are cached per example and cannot follow "
                "augmented inputs; give kd.teacher (a checkpoint) or set train.augment: none"
            )
        checkpoint = path / CHECKPOINT_NAME if path.is_dir() else path
        model = load_model(
            checkpoint, fingerprint=dataset.fingerprint, num_classes=dataset.num_classes
        )
        source, identity = str(checkpoint), file_hash(checkpoint)
    # Eval mode (BatchNorm's running statistics, no dropout); its forward runs under no_grad.
    return OnlineTeacher(model.to(device).eval(), source, identity)


LOGITS_FORMAT = "datapruning-logits/1"


def logits_sidecar(path: str | os.PathLike[str]) -> Path:
    """Where the record of a logits file's dataset lives: ``logits.npy`` -> ``logits.npy.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_teacher_logits(
    path: str | os.PathLike[str], logits: torch.Tensor | np.ndarray, dataset: Dataset
) -> Path:
    """Write teacher logits on ``dataset``'s training set as .npy, with the sidecar
    (``PATH.json``: format, dataset fingerprint, shape) that lets a run check they belong
    to its dataset. Use it for logits computed outside datapruning too."""
    array = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else logits
    shape = tuple(array.shape)
    if shape != (dataset.num_train, dataset.num_classes):
        raise DataPruningError(
            f"teacher logits of shape {shape} do not fit {dataset.name!r}: it needs "
            f"({dataset.num_train}, {dataset.num_classes})"
        )
    written = write_npy(path, array)
    write_json(
        logits_sidecar(written),
        {"format": LOGITS_FORMAT, "dataset_fingerprint": dataset.fingerprint, "shape": list(shape)},
    )
    return written


def _load_logits(path: Path, dataset: Dataset) -> torch.Tensor:
    if not path.is_file():
        raise DataPruningError(f"teacher logits {str(path)!r} not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # EOFError: an empty file
        raise DataPruningError(f"{str(path)!r} is not a .npy array of teacher logits") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise DataPruningError(
            f"teacher logits {str(path)!r} must be a 2-D float array, got {array.dtype} "
            f"of shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise DataPruningError(f"teacher logits {str(path)!r} contain NaN or inf; recompute them")
    _check_sidecar(path, dataset)
    return torch.as_tensor(array, dtype=torch.float32)


def _check_sidecar(path: Path, dataset: Dataset) -> None:
    """Logits of another dataset with the same N x C are refused; unrecorded ones warned about."""
    sidecar = logits_sidecar(path)
    if not sidecar.is_file():
        warnings.warn(
            f"teacher logits {str(path)!r} have no {sidecar.name} naming their dataset, so "
            "they cannot be checked against this one; write them with "
            "datapruning.save_teacher_logits(path, logits, dataset) to add it",
            stacklevel=4,
        )
        return
    try:
        record = json.loads(sidecar.read_text())
        found_format, fingerprint = record["format"], record["dataset_fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataPruningError(
            f"{str(sidecar)!r} is not a teacher-logits record; delete it, or rewrite the "
            "logits with datapruning.save_teacher_logits"
        ) from None
    if found_format != LOGITS_FORMAT:
        raise DataPruningError(
            f"{str(sidecar)!r} has format {found_format!r}; this datapruning reads "
            f"{LOGITS_FORMAT!r}: recompute the logits"
        )
    check_current(
        fingerprint,
        f"teacher logits {str(path)!r}",
        "delete them and re-run `datapruning train` (they are computed again from the teacher)",
    )
    if fingerprint != dataset.fingerprint:
        raise DataPruningError(
            f"teacher logits {str(path)!r} were computed on dataset {str(fingerprint)[:16]}, "
            f"not this one ({dataset.fingerprint[:16]}); compute them on this dataset"
        )
