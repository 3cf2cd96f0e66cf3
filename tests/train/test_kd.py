import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datapruning.train.kd import mean_kd_loss


def reference_kd(student, targets, teacher, alpha, temperature):
    """(1-a)*CE + a*T^2*KL(teacher_T || student_T), by explicit sums in float64."""
    student = student.tolist()
    teacher = teacher.tolist()
    targets = targets.tolist()

    def log_softmax(row, t):
        scaled = [v / t for v in row]
        top = max(scaled)
        log_norm = top + math.log(sum(math.exp(v - top) for v in scaled))
        return [v - log_norm for v in scaled]

    n = len(targets)
    ce = -sum(log_softmax(s, 1.0)[y] for s, y in zip(student, targets, strict=True)) / n
    kl = 0.0
    for s, t in zip(student, teacher, strict=True):
        log_p = log_softmax(t, temperature)
        log_q = log_softmax(s, temperature)
        kl += sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q, strict=True))
    kl /= n
    return (1 - alpha) * ce + alpha * temperature**2 * kl


@pytest.fixture
def logits():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(8, 5, generator=gen) * 3
    teacher = torch.randn(8, 5, generator=gen) * 3
    targets = torch.randint(0, 5, (8,), generator=gen)
    return student, targets, teacher


@pytest.mark.parametrize(("alpha", "temperature"), [(0.5, 4.0), (0.9, 1.0), (1.0, 2.0), (0.2, 0.5)])
def test_matches_hand_written_formula(logits, alpha, temperature):
    student, targets, teacher = logits
    got = mean_kd_loss(student, targets, teacher, alpha, temperature)
    assert got.shape == ()
    want = reference_kd(student, targets, teacher, alpha, temperature)
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_alpha_zero_is_cross_entropy(logits):
    student, targets, teacher = logits
    got = mean_kd_loss(student, targets, teacher, alpha=0.0, temperature=4.0)
    assert got.item() == pytest.approx(reference_kd(student, targets, teacher, 0.0, 4.0), rel=1e-6)
    # And the teacher has no influence.
    other = mean_kd_loss(student, targets, teacher * -5, alpha=0.0, temperature=4.0)
    assert got.item() == other.item()


def test_identical_teacher_adds_nothing(logits):
    student, targets, _ = logits
    ce = F.cross_entropy(student, targets).item()
    got = mean_kd_loss(student, targets, student.clone(), alpha=0.4, temperature=3.0).item()
    assert got == pytest.approx(0.6 * ce, rel=1e-5)


def test_kl_direction_is_teacher_to_student():
    # KL is asymmetric: swapping teacher and student must change the value.
    student = torch.tensor([[4.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0, 2.0]])
    y = torch.tensor([0])
    forward = mean_kd_loss(student, y, teacher, 1.0, 1.0).item()
    backward = mean_kd_loss(teacher, y, student, 1.0, 1.0).item()
    assert forward == pytest.approx(reference_kd(student, y, teacher, 1.0, 1.0), rel=1e-5)
    assert not np.isclose(forward, backward)


def test_gradient_flows_to_student_only(logits):
    student, targets, teacher = logits
    student = student.clone().requires_grad_(True)
    mean_kd_loss(student, targets, teacher, 0.5, 4.0).backward()
    assert student.grad is not None
    assert torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0
    # Each row's gradient sums to zero (softmax-based losses are shift invariant).
    assert torch.allclose(student.grad.sum(dim=1), torch.zeros(8), atol=1e-6)
