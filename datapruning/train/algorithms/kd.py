"""Knowledge distillation as an algorithm: the loss becomes (1-α)·CE + α·T²·KL.

Built when the run has a teacher (``kd.teacher``, ``kd.teacher_logits`` or the
``teacher`` argument of :func:`datapruning.train.loop.train`). Without
augmentation the teacher's logits are computed once per training example
(:func:`datapruning.train.kd.teacher_logits`, cached beside a checkpoint) and
the loss gathers the batch's rows by index; with augmentation the inputs change
every step, so the teacher runs on each augmented batch, inside the step and
its clock (:func:`datapruning.train.kd.online_teacher`). Alpha is resolved here,
once (``auto``: from the kept fraction, :func:`datapruning.train.kd.auto_alpha`).
The loss itself is :func:`datapruning.kernels.kd_loss.kd_loss`: the fused Triton
kernel on CUDA, its torch reference on CPU.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from datapruning.train.algorithms.base import Algorithm
from datapruning.train.kd import (
    OnlineTeacher,
    TeacherLogits,
    online_teacher,
    resolve_alpha,
    teacher_logits,
)
from datapruning.train.step import Loss, make_loss_fn


class Distillation(Algorithm):
    """KD from cached teacher logits, or from a teacher run online on each batch."""

    name = "kd"

    def __init__(
        self,
        teacher: TeacherLogits | OnlineTeacher,
        alpha: float,
        temperature: float,
        alpha_rule: str | None,
        device: torch.device,
    ) -> None:
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature
        self.alpha_rule = alpha_rule  # "auto" when alpha came from the kept fraction
        self.online = isinstance(teacher, OnlineTeacher)
        # Cached logits on the run's device, where the kernel gathers the batch's rows.
        self.logits = None if isinstance(teacher, OnlineTeacher) else teacher.logits.to(device)

    def loss(self, loss: Loss) -> Loss:
        settings = {"alpha": self.alpha, "temperature": self.temperature}
        if isinstance(self.teacher, OnlineTeacher):
            return Loss(make_loss_fn(online=True, **settings), teacher=self.teacher.model)
        return Loss(make_loss_fn(self.logits, **settings))

    def identity(self) -> Any:
        teacher = (
            f"online:{self.teacher.identity}"
            if isinstance(self.teacher, OnlineTeacher)
            else hashlib.sha256(self.teacher.logits.numpy().tobytes()).hexdigest()[:16]
        )
        return {"alpha": self.alpha, "temperature": self.temperature, "teacher": teacher}

    def summarize(self, summary: dict[str, Any]) -> None:
        kd: dict[str, Any] = {"alpha": self.alpha, "temperature": self.temperature}
        if self.alpha_rule is not None:
            kd["alpha_rule"] = self.alpha_rule
        kd["teacher"] = self.teacher.source
        kd["cached_logits"] = isinstance(self.teacher, TeacherLogits) and self.teacher.cached
        summary["kd"] = kd
        # cached: the teacher's logits once per example; online: the teacher ran on every
        # augmented batch, inside the training clock.
        summary["kd_teacher"] = "online" if self.online else "cached"
        if isinstance(self.teacher, TeacherLogits):
            summary["teacher_logits_seconds"] = self.teacher.seconds
        ran = summary["kernels"].get("paths", {}).get("kd_loss")
        summary["kernels"]["kd_loss"] = ran["path"] if ran else None


def build(run: Any) -> Distillation | None:
    """KD when the run has a teacher; its logits (or the online model) resolved now."""
    if run.teacher is None:
        return None
    kd = run.kd
    # Augmented inputs change every step: the teacher sees the same augmented batch.
    teacher = (
        _shared_logits(run)
        if run.augmenter is None
        else online_teacher(run.teacher, run.dataset, run.device)
    )
    alpha = resolve_alpha(kd.alpha, run.data.kept_fraction)
    rule = "auto" if kd.alpha == "auto" else None
    return Distillation(teacher, alpha, kd.temperature, rule, run.device)


def _shared_logits(run: Any) -> TeacherLogits:
    """The teacher's logits on every training example: with several processes, rank 0
    computes (and caches) them once and the others receive them, indexed like the data."""
    world = run.world
    if not world.writes:  # the time is rank 0's (the summary's); this rank spent none
        shape = (run.dataset.num_train, run.dataset.num_classes)
        return TeacherLogits(
            world.broadcast(torch.empty(shape, dtype=torch.float32)), "rank 0", 0.0, True
        )
    ready = teacher_logits(run.teacher, run.dataset, cache=run.kd.cache_logits)
    if world.distributed:
        world.broadcast(ready.logits.detach().to("cpu", torch.float32).contiguous())
    return ready
