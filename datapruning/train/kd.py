"""Knowledge distillation loss (Hinton et al. 2015).

loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))

The T^2 factor keeps the soft-target gradients on the same scale as the hard
ones when T changes. The loss is computed per example (the loop reduces it,
optionally weighting examples), so a sampler that records or re-weights
examples sees each one's loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datapruning._io import write_npy
from datapruning.data.sources import Dataset
from datapruning.errors import DataPruningError
from datapruning.train.evaluation import predict


def per_example_kd_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor,
    index: torch.Tensor | None = None,
    *,
    alpha: float,
    temperature: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-example KD losses, float32, shape (B,): the pure-torch reference.

    Row ``i`` is (1 - alpha) * CE(student_i, y_i) + alpha * T^2 *
    KL(softmax(teacher_i / T) || softmax(student_i / T)), times ``weights[i]``
    when given. The teacher's row is ``teacher_logits[index[i]]`` (cached
    logits of the whole training set, gathered here), or row ``i`` when
    ``index`` is None. Logits of any float dtype are computed in float32.
    Fused kernels of the training step take the same arguments and return the
    same (the loop's loss function calls this signature).
    """
    if student_logits.dim() != 2:
        raise DataPruningError(
            f"student logits must be (batch, classes), got {tuple(student_logits.shape)}"
        )
    batch, classes = student_logits.shape
    if teacher_logits.dim() != 2 or teacher_logits.shape[1] != classes:
        raise DataPruningError(
            f"teacher logits {tuple(teacher_logits.shape)} must have {classes} columns, "
            "one per class of the student"
        )
    if tuple(targets.shape) != (batch,):
        raise DataPruningError(f"targets {tuple(targets.shape)} must be ({batch},)")
    rows = batch if index is None else tuple(index.shape)
    if index is None and teacher_logits.shape[0] != batch:
        raise DataPruningError(
            f"teacher logits have {teacher_logits.shape[0]} rows for a batch of {batch}; "
            "give index to gather the batch's rows"
        )
    if index is not None and rows != (batch,):
        raise DataPruningError(f"index {rows} must be ({batch},)")
    if weights is not None and tuple(weights.shape) != (batch,):
        raise DataPruningError(f"weights {tuple(weights.shape)} must be ({batch},)")
    if not temperature > 0:
        raise DataPruningError(f"KD temperature {temperature} must be > 0")
    if not 0 <= alpha <= 1:
        raise DataPruningError(f"KD alpha {alpha} must lie in [0, 1]")
    student = student_logits.float()
    losses = F.cross_entropy(student, targets, reduction="none")
    if alpha != 0:
        teacher = (teacher_logits if index is None else teacher_logits[index]).float()
        log_q = F.log_softmax(student / temperature, dim=1)
        log_p = F.log_softmax(teacher / temperature, dim=1)
        kl = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(dim=1)
        losses = (1 - alpha) * losses + alpha * temperature**2 * kl
    return losses if weights is None else losses * weights


def kd_loss(
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

    x_train = torch.as_tensor(dataset.x_train)
    if isinstance(teacher, nn.Module):
        start = time.perf_counter()
        device = next(teacher.parameters()).device
        logits = predict(teacher, x_train.to(device), batch_size).cpu()
        result = TeacherLogits(logits, "module", time.perf_counter() - start, False)
    else:
        path = Path(teacher)
        if path.suffix == ".npy":
            result = TeacherLogits(_load_logits(path), str(path), 0.0, False)
        else:
            checkpoint = path / CHECKPOINT_NAME if path.is_dir() else path
            model = load_model(
                checkpoint, fingerprint=dataset.fingerprint, num_classes=dataset.num_classes
            )
            cache_path = checkpoint.parent / (
                f"teacher_logits-{dataset.fingerprint[:16]}-{_file_hash(checkpoint)}.npy"
            )
            if cache and cache_path.is_file():
                result = TeacherLogits(_load_logits(cache_path), str(cache_path), 0.0, True)
            else:
                start = time.perf_counter()
                logits = predict(model, x_train, batch_size)
                result = TeacherLogits(logits, str(checkpoint), time.perf_counter() - start, False)
                if cache:
                    # A read-only teacher directory: the run goes on uncached.
                    with contextlib.suppress(OSError, DataPruningError):
                        write_npy(cache_path, logits.numpy())
    shape = tuple(result.logits.shape)
    if shape != (dataset.num_train, dataset.num_classes):
        raise DataPruningError(
            f"teacher logits from {result.source!r} have shape {shape}; this dataset needs "
            f"({dataset.num_train}, {dataset.num_classes}): one row per training example and "
            "one column per class"
        )
    return result


def _load_logits(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise DataPruningError(f"teacher logits {str(path)!r} not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        raise DataPruningError(f"{str(path)!r} is not a .npy array of teacher logits") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise DataPruningError(
            f"teacher logits {str(path)!r} must be a 2-D float array, got {array.dtype} "
            f"of shape {array.shape}"
        )
    return torch.as_tensor(array, dtype=torch.float32)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
