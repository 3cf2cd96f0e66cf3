"""Knowledge distillation loss (Hinton et al. 2015).

loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))

The T^2 factor keeps the soft-target gradients on the same scale as the hard
ones when T changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    ce = F.cross_entropy(student_logits, targets)
    if alpha == 0:
        return ce
    kl = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    return (1 - alpha) * ce + alpha * temperature**2 * kl
