"""The fused KD loss (Triton, forced; under Triton's interpreter on CPU) against its reference.

Each case compares the per-example losses and the gradient w.r.t. the student
logits (backward with a random per-example ``grad_output``) with
``kd_loss_reference``; the largest absolute errors per dtype are printed at the
end of the module (``pytest -s``).
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from datapruning.errors import DataPruningError
from datapruning.kernels import forced_backend
from datapruning.kernels import kd_loss as kd_module
from datapruning.kernels.kd_loss import kd_loss, kd_loss_reference
from datapruning.train import kd as train_kd

pytest.importorskip("triton")

# Both paths compute in float32 from the same logits, so losses agree to float32
# rounding; the gradient is rounded once to the student's dtype by the reference
# and twice (kernel, then the in-place scaling by grad_output) by the kernel.
LOSS_TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-5, 1e-5)}
GRAD_TOL = {torch.float32: (1e-5, 1e-6), torch.bfloat16: (1.6e-2, 1e-5)}
MAX_ERRORS: dict[str, dict[str, float]] = defaultdict(lambda: {"loss": 0.0, "grad": 0.0})


@pytest.fixture(scope="module", autouse=True)
def report_max_errors():
    yield
    for dtype, errors in sorted(MAX_ERRORS.items()):
        print(
            f"\nkd_loss max abs error {dtype}: loss {errors['loss']:.3g}, grad {errors['grad']:.3g}"
        )


def _inputs(batch, classes, dtype, *, indexed, weighted, device="cpu", scale=3.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    teacher_rows = batch + 5 if indexed else batch
    student = (torch.randn(batch, classes, generator=generator) * scale).to(device, dtype)
    teacher = (torch.randn(teacher_rows, classes, generator=generator) * scale).to(device, dtype)
    targets = torch.randint(0, classes, (batch,), generator=generator).to(device)
    index = (
        torch.randperm(teacher_rows, generator=generator)[:batch].to(device) if indexed else None
    )
    weights = (2 * torch.rand(batch, generator=generator)).to(device) if weighted else None
    grad_output = torch.rand(batch, generator=generator).to(device)
    return student, targets, teacher, index, weights, grad_output


def _loss_and_grad(function, student, targets, teacher, index, weights, grad_output, **kd):
    student = student.detach().clone().requires_grad_()
    loss = function(student, targets, teacher, index, weights=weights, **kd)
    loss.backward(grad_output)
    return loss.detach(), student.grad


def _compare(batch, classes, dtype, alpha, temperature, *, indexed, weighted, device="cpu"):
    student, targets, teacher, index, weights, grad_output = _inputs(
        batch, classes, dtype, indexed=indexed, weighted=weighted, device=device
    )
    kd = {"alpha": alpha, "temperature": temperature}
    with forced_backend("triton"):
        loss, grad = _loss_and_grad(
            kd_loss, student, targets, teacher, index, weights, grad_output, **kd
        )
    want_loss, want_grad = _loss_and_grad(
        kd_loss_reference, student, targets, teacher, index, weights, grad_output, **kd
    )
    assert loss.dtype == torch.float32 and loss.shape == (batch,)
    assert grad.dtype == dtype
    rtol, atol = LOSS_TOL[dtype]
    torch.testing.assert_close(loss, want_loss, rtol=rtol, atol=atol)
    rtol, atol = GRAD_TOL[dtype]
    torch.testing.assert_close(grad, want_grad, rtol=rtol, atol=atol)
    errors = MAX_ERRORS[str(dtype).removeprefix("torch.")]
    errors["loss"] = max(errors["loss"], (loss - want_loss).abs().max().item())
    errors["grad"] = max(errors["grad"], (grad.float() - want_grad.float()).abs().max().item())


DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("classes", [10, 33, 1000])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_shapes_match_the_reference(batch, classes, dtype):
    _compare(batch, classes, dtype, 0.5, 4.0, indexed=True, weighted=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_alpha_and_temperature_match_the_reference(alpha, temperature, dtype):
    _compare(7, 33, dtype, alpha, temperature, indexed=True, weighted=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("indexed", [False, True], ids=["rows", "index"])
def test_index_and_weights_match_the_reference(indexed, weighted, dtype):
    _compare(7, 33, dtype, 0.5, 2.0, indexed=indexed, weighted=weighted)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("classes", "max_block"), [(33, 16), (1000, 256)])
def test_rows_wider_than_a_block(monkeypatch, classes, max_block, dtype):
    # The two-sweep path (online softmax over several blocks, ragged last block) that
    # C > 4096 takes, exercised at small C by narrowing the block.
    monkeypatch.setattr(kd_module, "MAX_BLOCK", max_block)
    _compare(7, classes, dtype, 0.5, 4.0, indexed=True, weighted=True)


def test_a_float32_teacher_table_with_a_bfloat16_student():
    # The loop's case under bf16 autocast: cached float32 teacher logits, bf16 student.
    student, targets, teacher, index, weights, grad_output = _inputs(
        7, 33, torch.bfloat16, indexed=True, weighted=True
    )
    teacher = teacher.float()
    kd = {"alpha": 0.5, "temperature": 4.0}
    with forced_backend("triton"):
        loss, grad = _loss_and_grad(
            kd_loss, student, targets, teacher, index, weights, grad_output, **kd
        )
    want_loss, want_grad = _loss_and_grad(
        kd_loss_reference, student, targets, teacher, index, weights, grad_output, **kd
    )
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-5)
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(grad, want_grad, rtol=1.6e-2, atol=1e-5)


def test_an_empty_batch():
    student, targets, teacher, _, _, _ = _inputs(
        3, 10, torch.float32, indexed=False, weighted=False
    )
    with forced_backend("triton"):
        loss = kd_loss(student[:0], targets[:0], teacher[:0], alpha=0.5, temperature=2.0)
    assert loss.shape == (0,)


def test_large_logits_stay_finite():
    student, targets, teacher, index, _, _ = _inputs(
        7, 33, torch.float32, indexed=True, weighted=False, scale=300.0
    )
    kd = {"alpha": 0.5, "temperature": 1.0}
    with forced_backend("triton"):
        loss = kd_loss(student, targets, teacher, index, **kd)
    # Logits of ±900: float32 spacing there is 6e-5, so only relative agreement is meaningful.
    want = kd_loss_reference(student, targets, teacher, index, **kd)
    torch.testing.assert_close(loss, want, rtol=1e-4, atol=0)
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize(("alpha", "temperature"), [(0.0, 1.0), (0.5, 4.0), (1.0, 2.0)])
def test_reference_mean_is_the_training_loss(alpha, temperature):
    student, targets, teacher, _, _, _ = _inputs(
        64, 10, torch.float32, indexed=False, weighted=False
    )
    per_example = kd_loss_reference(student, targets, teacher, alpha=alpha, temperature=temperature)
    batch_mean = train_kd.mean_kd_loss(student, targets, teacher, alpha, temperature)
    torch.testing.assert_close(per_example.mean(), batch_mean, rtol=1e-6, atol=1e-6)


def test_teacher_is_not_read_at_alpha_zero():
    student, targets, teacher, _, _, _ = _inputs(
        7, 10, torch.float32, indexed=False, weighted=False
    )
    teacher = torch.full_like(teacher, float("nan"))
    with forced_backend("triton"):
        loss = kd_loss(student, targets, teacher, alpha=0.0, temperature=2.0)
    assert torch.isfinite(loss).all()


def test_the_teacher_gets_no_gradient():
    student, targets, teacher, index, _, _ = _inputs(
        7, 10, torch.float32, indexed=True, weighted=False
    )
    student.requires_grad_()
    teacher.requires_grad_()
    with forced_backend("triton"):
        kd_loss(student, targets, teacher, index, alpha=0.5, temperature=2.0).sum().backward()
    assert student.grad is not None and teacher.grad is None


def test_without_grad_the_loss_is_the_same():
    student, targets, teacher, index, weights, _ = _inputs(
        7, 33, torch.bfloat16, indexed=True, weighted=True
    )
    kd = {"alpha": 0.5, "temperature": 4.0, "weights": weights}
    with forced_backend("triton"), torch.no_grad():
        loss = kd_loss(student, targets, teacher, index, **kd)
    torch.testing.assert_close(loss, kd_loss_reference(student, targets, teacher, index, **kd))


def test_strided_logits():
    # A transposed student (classes not contiguous) and teacher rows sliced from a wider table.
    student, targets, teacher, index, _, grad_output = _inputs(
        7, 33, torch.float32, indexed=True, weighted=False
    )
    student_t = student.t().contiguous().t()
    wide = torch.zeros(teacher.shape[0], 50)
    wide[:, 5:38] = teacher
    teacher_view = wide[:, 5:38]
    kd = {"alpha": 0.5, "temperature": 2.0}
    with forced_backend("triton"):
        loss, grad = _loss_and_grad(
            kd_loss, student_t, targets, teacher_view, index, None, grad_output, **kd
        )
    want_loss, want_grad = _loss_and_grad(
        kd_loss_reference, student, targets, teacher, index, None, grad_output, **kd
    )
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad, want_grad)


def test_a_second_backward_through_a_retained_graph_is_refused():
    # The saved gradient is scaled in place; autograd's version check must catch reuse.
    student, targets, teacher, _, _, _ = _inputs(
        7, 10, torch.float32, indexed=False, weighted=False
    )
    student.requires_grad_()
    with forced_backend("triton"):
        loss = kd_loss(student, targets, teacher, alpha=0.5, temperature=2.0).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_out_of_range_rows_give_nan_in_the_kernel():
    # On CUDA the range checks are skipped (a sync per step); the kernel must then
    # neither read out of bounds nor hide the error: that example's loss is NaN.
    student, targets, teacher, index, _, _ = _inputs(
        4, 10, torch.float32, indexed=True, weighted=False
    )
    targets[1] = 10
    index[2] = -1
    loss, grad = kd_module._launch(student, targets, teacher, index, None, 0.5, 2.0, with_grad=True)
    assert loss.isnan().tolist() == [False, True, True, False]
    assert grad[1:3].isnan().all() and grad[[0, 3]].isfinite().all()


def _bad(**changes):
    student, targets, teacher, index, weights, _ = _inputs(
        4, 10, torch.float32, indexed=True, weighted=True
    )
    args = {
        "student_logits": student,
        "targets": targets,
        "teacher_logits": teacher,
        "index": index,
        "weights": weights,
        "alpha": 0.5,
        "temperature": 2.0,
    }
    args.update(changes)
    return args


BAD_INPUTS = {
    "student 3-D": (_bad(student_logits=torch.zeros(4, 10, 1)), "student_logits must be 2-D"),
    "teacher 1-D": (_bad(teacher_logits=torch.zeros(10)), "teacher_logits must be 2-D"),
    "class counts differ": (
        _bad(teacher_logits=torch.zeros(9, 11)),
        "teacher_logits have 11 classes but student_logits have 10",
    ),
    "integer logits": (
        _bad(student_logits=torch.zeros(4, 10, dtype=torch.long)),
        "student_logits must be float",
    ),
    "targets too short": (
        _bad(targets=torch.zeros(3, dtype=torch.long)),
        r"targets have shape \(3,\).*\(4,\)",
    ),
    "float targets": (_bad(targets=torch.zeros(4)), "targets must be integer"),
    "target too large": (
        _bad(targets=torch.tensor([0, 10, 1, 2])),
        r"target label 10 is out of range for 10 classes",
    ),
    "negative target": (_bad(targets=torch.tensor([0, -1, 1, 2])), "target label -1"),
    "index too long": (_bad(index=torch.arange(5)), r"index has shape \(5,\)"),
    "index out of range": (
        _bad(index=torch.tensor([0, 1, 2, 9])),
        "index 9 is out of range for teacher_logits with 9 rows",
    ),
    "float index": (_bad(index=torch.zeros(4)), "index must hold integer rows"),
    "teacher rows without index": (
        _bad(index=None),
        "teacher_logits have 9 rows but the batch has 4",
    ),
    "temperature zero": (_bad(temperature=0.0), "temperature 0.0 must be > 0"),
    "temperature negative": (_bad(temperature=-1), "temperature -1 must be > 0"),
    "teacher on another device": (
        _bad(teacher_logits=torch.zeros(9, 10, device="meta")),
        "teacher_logits on meta but student_logits on cpu",
    ),
    "temperature nan": (_bad(temperature=float("nan")), "temperature nan must be a finite"),
    "alpha above one": (_bad(alpha=1.5), r"alpha 1.5 must lie in \[0, 1\]"),
    "alpha negative": (_bad(alpha=-0.1), r"alpha -0.1 must lie in \[0, 1\]"),
    "weights wrong shape": (
        _bad(weights=torch.ones(4, 1)),
        r"weights must be a float tensor of shape \(4,\)",
    ),
    "integer weights": (_bad(weights=torch.ones(4, dtype=torch.long)), "weights must be a float"),
}


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_in_one_line(case, backend):
    args, message = BAD_INPUTS[case]
    with forced_backend(backend), pytest.raises(DataPruningError, match=message) as info:
        kd_loss(**args)
    assert "\n" not in str(info.value)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("batch", "classes"), [(1, 10), (64, 33), (512, 1000), (8, 32000)])
def test_cuda_matches_the_reference(batch, classes, dtype):
    _compare(batch, classes, dtype, 0.5, 4.0, indexed=True, weighted=True, device="cuda")
    _compare(batch, classes, dtype, 0.0, 1.0, indexed=False, weighted=False, device="cuda")


@pytest.mark.cuda
def test_cuda_takes_the_kernel_by_default():
    student, targets, teacher, _, _, _ = _inputs(
        8, 10, torch.float32, indexed=False, weighted=False, device="cuda"
    )
    student.requires_grad_()
    with forced_backend("auto"):
        loss = kd_loss(student, targets, teacher, alpha=0.5, temperature=2.0)
    assert type(loss.grad_fn).__name__ == "_FusedKDLossBackward"
