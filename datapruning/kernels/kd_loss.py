"""Fused knowledge-distillation loss: per-example CE + T²·KL and its gradient in one kernel.

Per example ``b`` with student logits ``s``, teacher logits ``t`` (row
``index[b]`` of ``teacher_logits``), label ``y``, weight ``w``::

    loss_b = w · [(1 − α)·CE(s, y) + α·T²·KL(softmax(t/T) ‖ softmax(s/T))]
    ∂loss_b/∂s = w · [(1 − α)·(softmax(s) − onehot(y)) + α·T·(softmax(s/T) − softmax(t/T))]

Why a kernel: the torch reference (``F.cross_entropy`` + ``F.kl_div`` on
``log_softmax``) runs one kernel per op forward and backward, each reading and
writing a batch-by-class tensor, and keeps three float32 B×C tensors for
backward (the log-softmaxes): 12 000 bytes per row at C = 1000 against the
kernel's 4 000 (its one float32 gradient; bench/results/kernel_kd_cpu.json). The Triton kernel (the pattern of Liger-Kernel's fused cross entropy)
gives each program a tile of rows and sweeps their classes in blocks: a first
sweep keeps running maxima and sums (the online softmax of Milakov & Gimelshein
2018) for softmax(s), softmax(s/T) and softmax(t/T); a second sweep writes the
gradient and sums the KL term with the final normalisers. When a row fits in one
block (C ≤ 4096, e.g. C = 1000) both sweeps work on the same registers, so the
logits are read once and the gradient written once; larger C reads the row a
second time in the second sweep. No batch softmax is ever stored: the only
B×C tensor the kernel writes is the gradient, kept for backward, which scales it
in place by the incoming per-example gradient. Teacher rows are gathered by
``index`` inside the kernel, so a cached (N, C) table of the whole training
set's teacher logits is read in place, never copied per batch.

Arithmetic is float32 whatever the logits' dtype (float32 and bfloat16 are
tested); the gradient is stored in the student's dtype. The KL term is summed as
``Σ p_t·(log p_t − log q)`` with the log-probabilities formed from the final
maxima and sums, not as a difference of log-sum-exps, so a small KL does not
lose its digits to cancellation.

Accuracy against :func:`kd_loss_reference` (tests/kernels/test_kd_loss.py,
Triton 3.9's CPU interpreter, B ∈ {1, 7, 64}, C ∈ {10, 33, 1000}, α ∈ {0, ½, 1},
T ∈ {1, 2, 4}; largest absolute errors): float32 losses 1.1e-5 (losses of
order 10), gradients 3.0e-7; bfloat16 losses 1.5e-5, gradients 7.8e-3, one
bfloat16 rounding step at gradients of 1 to 2 (the kernel rounds the gradient,
then scales it by ``grad_output``; autograd rounds once).

Speed and peak memory: bench/kernel_kd.py writes
bench/results/kernel_kd_<device>.json. On CPU the dispatcher runs the reference
(Triton runs there only in its interpreter), so the goals (≥ 2× faster and
≥ 50 % less peak memory than the reference at B = 8192, C = 1000) are for a
GPU and are not yet measured. The kernel's tests pass under the interpreters of
Triton 3.6.0 and 3.9.0; it has not yet run on a GPU. Launch parameters: row
tiles of 1024 elements (rows × block) on 8 warps, 4 elements a thread, blocks of
at most 4096 classes. Compiled ahead of time for sm_80 and sm_90
(datapruning/kernels/_aot.py, Triton 3.9), every variant uses at most 80
registers at C ≤ 2000 without spills (tiles of 2048 on 4 warps took 254-255 at
C = 100, a quarter of the SM's threads); rows of 4096-class blocks take up to
173. Untuned for speed until a GPU measures them.

On CPU the dispatcher runs the torch path: the same formulas in torch ops, one
autograd node whose backward is one multiply (:func:`_forward_torch`), with one
fast argument test a call. bench/results/kernel_kd_cpu.json (one thread, the
shared 2-core machine at load ~5): a whole KD training loop at MNIST-1D's size
costs 1.015x a bare hand-written loop with ``F.cross_entropy`` + ``F.kl_div``
(median CPU time of 15 rounds of 300 steps; the previous kd_loss, autograd
through F ops after per-call checks, cost 1.10x in the same loop, measured
twice beside it by swapping the function in), and one step at B = 8192,
C = 1000 takes 352 ms against the autograd reference's 802 ms. The autograd
formulation stays as :func:`kd_loss_reference`, the definition the tests use.

Checks: shapes, dtypes, devices, ``alpha`` and ``temperature`` are checked on
every call (no device work). The *values* of ``targets`` and ``index`` are
range-checked only for CPU tensors: on CUDA that check would synchronise the
device each step, so there the kernel instead turns an out-of-range label or
teacher row into a NaN loss and NaN gradient for that example (it never reads
out of bounds). Catching that NaN is the training loop's job (a non-finite-loss
check, issue 24's loop side); this module only guarantees it is a NaN, never a
wrong finite number.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F

from datapruning.errors import DataPruningError
from datapruning.kernels._dispatch import (
    HAVE_TRITON,
    PROBED,
    launch_failed,
    mismatch,
    record,
    take_kernel,
)

__all__ = ["kd_loss", "kd_loss_reference"]

# Widest class block one program holds; rows with more classes take several blocks.
MAX_BLOCK = 4096
# Elements of a row tile (rows × block): small-C rows are packed several to a program.
TILE_ELEMENTS = 1024
MAX_ROWS = 64


def kd_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor,
    index: torch.Tensor | None = None,
    *,
    alpha: float,
    temperature: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-example KD losses (float32, shape ``[B]``), differentiable w.r.t. ``student_logits``.

    Args:
        student_logits: ``[B, C]`` float logits (float32 or bfloat16).
        targets: ``[B]`` integer labels in ``[0, C)``.
        teacher_logits: ``[N, C]`` float logits; row ``index[b]`` belongs to example ``b``.
            Receives no gradient.
        index: ``[B]`` integer rows of ``teacher_logits``; ``None`` means ``N == B`` and
            row ``b`` is example ``b``.
        alpha: weight of the distillation term, in ``[0, 1]``; at 0 the teacher is not read.
        temperature: softmax temperature ``T > 0`` of the distillation term.
        weights: optional ``[B]`` float per-example weights multiplying the losses
            (constants: they receive no gradient).

    Takes the Triton kernel when :func:`~datapruning.kernels.use_triton` says so (CUDA
    tensors by default) and the kernel's variant passed its probe; else the torch
    path, which computes what :func:`kd_loss_reference` does. A launch that raises
    falls back to the torch path for that call and every later one of its variant;
    :func:`~datapruning.kernels.paths_taken` records which ran.

    Raises:
        DataPruningError: a tensor of the wrong shape, dtype or device, a label or
            teacher row out of range (checked for CPU tensors), ``temperature <= 0``
            or ``alpha`` outside ``[0, 1]``.
    """
    # Shapes, dtypes, devices and scalars here; the values of targets and index only
    # where a path would not refuse them itself (see _check_values).
    _check(student_logits, targets, teacher_logits, index, alpha, temperature, weights, False)
    alpha, temperature = float(alpha), float(temperature)
    if student_logits.shape[0] > 0:
        variant = (student_logits, teacher_logits, index, weights, alpha)
        if take_kernel("kd_loss", lambda: _variant(*variant), (student_logits,), _probe):
            # The kernel turns a bad label into NaN: on CPU (the interpreter) refuse it first.
            _check_values(student_logits, targets, teacher_logits, index, alpha)
            try:
                loss = _FusedKDLoss.apply(
                    student_logits, targets, teacher_logits, index, weights, alpha, temperature
                )
            except Exception as exc:  # never break a run: the reference gives the same loss
                launch_failed("kd_loss", _variant(*variant), exc)
            else:
                record("kd_loss", "triton", PROBED)
                return loss
    try:
        if alpha == 0:  # cross-entropy alone: bit for bit what F.cross_entropy gives
            return _reference(
                student_logits, targets, teacher_logits, index, 0.0, temperature, weights
            )
        if student_logits.requires_grad and torch.is_grad_enabled():
            return _TorchKDLoss.apply(
                student_logits, targets, teacher_logits, index, weights, alpha, temperature
            )
        with torch.no_grad():
            return _forward_torch(
                student_logits, targets, teacher_logits, index, weights, alpha, temperature, False
            )[0]
    except (RuntimeError, IndexError):
        # gather and index_select refuse an out-of-range label or row (on CPU): say
        # which, in one line, instead of paying for the check on every call.
        _check_values(student_logits, targets, teacher_logits, index, alpha)
        raise


def kd_loss_reference(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor,
    index: torch.Tensor | None = None,
    *,
    alpha: float,
    temperature: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """What :func:`kd_loss` computes, in plain torch (float32 arithmetic): the definition.

    Its mean over the batch (without weights) is ``datapruning.train.kd.mean_kd_loss``.
    """
    _check(student_logits, targets, teacher_logits, index, alpha, temperature, weights)
    return _reference(student_logits, targets, teacher_logits, index, alpha, temperature, weights)


def _reference(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor,
    index: torch.Tensor | None,
    alpha: float,
    temperature: float,
    weights: torch.Tensor | None,
) -> torch.Tensor:
    student = student_logits.float()
    loss = F.cross_entropy(student, targets.long(), reduction="none")
    if alpha != 0:  # at alpha = 0 the teacher is not read (as train.kd.mean_kd_loss)
        teacher = teacher_logits.detach()
        if index is not None:
            teacher = teacher[index]
        kl = F.kl_div(
            F.log_softmax(student / temperature, dim=1),
            F.log_softmax(teacher.float() / temperature, dim=1),
            log_target=True,
            reduction="none",
        ).sum(dim=1)
        loss = (1 - alpha) * loss + alpha * temperature**2 * kl
    if weights is not None:  # constants, as in the kernel: they get no gradient
        loss = loss * weights.detach().float()
    return loss


def _forward_torch(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor,
    index: torch.Tensor | None,
    weights: torch.Tensor | None,
    alpha: float,
    temperature: float,
    with_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The kernel's computation in torch ops: losses and (``with_grad``) their gradient.

    The same formulas as the kernel (module docstring), so one pass forward and
    a single multiply backward instead of autograd through five ops each way: at
    B = 128, C = 10 (MNIST-1D's size) it costs less than the bare
    ``F.cross_entropy`` + ``F.kl_div`` a hand-written loop would call.
    """
    # Autograd is off here: inside Function.forward, or under no_grad in kd_loss. Few
    # ops, in place where they can be: at MNIST-1D's size each op's dispatch is most
    # of its cost.
    student = student_logits.float()
    ce_scale = 1.0 - alpha
    log_p_s = torch.log_softmax(student, dim=1)
    y = (targets if targets.dtype == torch.int64 else targets.long()).unsqueeze(1)
    loss = log_p_s.gather(1, y).squeeze(1).mul_(-ce_scale)  # (1 − α)·CE
    grad = None
    if with_grad:  # (1 − α)·(softmax(s) − onehot(y))
        grad = log_p_s.exp_().mul_(ce_scale)
        grad.scatter_(1, y, -ce_scale, reduce="add")
    if alpha != 0:  # at alpha = 0 the teacher is not read
        teacher = teacher_logits if index is None else teacher_logits.index_select(0, index)
        inv_temp = 1.0 / temperature
        log_q = torch.log_softmax(student * inv_temp, dim=1)
        log_p = torch.log_softmax(teacher.float() * inv_temp, dim=1)
        p_t = log_p.exp()
        kl = log_p.sub_(log_q).mul_(p_t).sum(dim=1)
        loss.add_(kl, alpha=alpha * temperature * temperature)
        if grad is not None:  # + α·T·(softmax(s/T) − softmax(t/T))
            grad.add_(log_q.exp_().sub_(p_t), alpha=alpha * temperature)
    if weights is not None:
        w = weights.float()
        loss.mul_(w)
        if grad is not None:
            grad.mul_(w.unsqueeze(1))
    if grad is not None and grad.dtype != student_logits.dtype:
        grad = grad.to(student_logits.dtype)
    return loss, grad


class _TorchKDLoss(torch.autograd.Function):
    """The torch path of :func:`kd_loss`: gradient formed in forward, as the kernel does."""

    @staticmethod
    def forward(
        ctx: Any,
        student: torch.Tensor,
        targets: torch.Tensor,
        teacher: torch.Tensor,
        index: torch.Tensor | None,
        weights: torch.Tensor | None,
        alpha: float,
        temperature: float,
    ) -> torch.Tensor:
        loss, grad = _forward_torch(
            student, targets, teacher, index, weights, alpha, temperature, True
        )
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        grad.mul_(grad_output.unsqueeze(1))  # in place, as the kernel's backward
        return grad, None, None, None, None, None, None


def _config(classes: int) -> tuple[int, int, int, int]:
    """(BLOCK, ROWS, N_BLOCKS, num_warps) of the kernel's launch for ``classes`` columns."""
    block = min(triton.next_power_of_2(classes), MAX_BLOCK)
    rows = max(1, min(MAX_ROWS, TILE_ELEMENTS // block))
    n_blocks = triton.cdiv(classes, block) if classes > block else 1
    return block, rows, n_blocks, _warps(rows * block)


def _warps(tile: int) -> int:
    # 8 warps for a full tile: 4 elements a thread. With 4 warps and tiles of 2048,
    # C = 100 took 254-255 registers (bench/results/kernels_aot.json has the counts).
    return 8 if tile >= TILE_ELEMENTS else 4


def _variant(
    student: torch.Tensor,
    teacher: torch.Tensor,
    index: torch.Tensor | None,
    weights: torch.Tensor | None,
    alpha: float,
) -> tuple[Any, ...]:
    """What one compiled kernel serves: device, dtypes and what sets the compile-time constants.

    The class count itself, not just its launch constants: a model has one, and
    the probe then runs the very launch the batches will.
    """
    with_grad = student.requires_grad and torch.is_grad_enabled()
    classes = student.shape[1]
    return (
        str(student.device),
        student.dtype,
        teacher.dtype if alpha != 0 else None,
        None if index is None else index.dtype,
        None if weights is None else weights.dtype,
        with_grad,
        classes,
    )


def _probe(variant: tuple[Any, ...]) -> str | None:
    """Launch ``variant`` on a few rows (two programs and a tail) and compare with the reference."""
    device, dtype, teacher_dtype, index_dtype, weights_dtype, with_grad, classes = variant
    alpha = 0.5 if teacher_dtype is not None else 0.0
    rows = _config(classes)[1] + 1
    gen = torch.Generator().manual_seed(0)
    student = (torch.randn(rows, classes, generator=gen) * 3).to(device, dtype)
    targets = torch.randint(0, classes, (rows,), generator=gen).to(device)
    table_rows = rows + 2 if index_dtype is not None else rows
    teacher = (torch.randn(table_rows, classes, generator=gen) * 3).to(
        device, teacher_dtype or dtype
    )
    index = None
    if index_dtype is not None:
        index = torch.randperm(table_rows, generator=gen)[:rows].to(device, index_dtype)
    weights = None
    if weights_dtype is not None:
        weights = torch.rand(rows, generator=gen).to(device, weights_dtype)
    loss, grad = _launch(student, targets, teacher, index, weights, alpha, 2.0, with_grad=with_grad)
    leaf = student.detach().float().requires_grad_(with_grad)
    with torch.enable_grad():
        want = _reference(leaf, targets, teacher, index, alpha, 2.0, weights)
        if with_grad:
            want.sum().backward()
    loose = dtype != torch.float32 or (teacher_dtype not in (None, torch.float32))
    tol = 2e-2 if loose else 1e-4
    return mismatch("loss", loss, want, tol, tol) or (
        mismatch("gradient", grad, leaf.grad, tol, tol)
        if with_grad and grad is not None and leaf.grad is not None
        else None
    )


def _check(
    student: torch.Tensor,
    targets: torch.Tensor,
    teacher: torch.Tensor,
    index: torch.Tensor | None,
    alpha: float,
    temperature: float,
    weights: torch.Tensor | None,
    values: bool = True,
) -> None:
    """Refuse bad arguments in one line; with ``values``, bad labels and rows too (CPU)."""
    # One expression for the common, valid call (this runs every step: at MNIST-1D's
    # size the checks one by one cost a few percent of a step); _explain says what is
    # wrong otherwise.
    batch = student.shape[0]
    device = student.device
    fine = (
        student.dim() == 2
        and teacher.dim() == 2
        and student.dtype in _FLOATS
        and teacher.dtype in _FLOATS
        and 0 < student.shape[1] == teacher.shape[1]
        and targets.shape == (batch,)
        and targets.dtype in _INTEGERS
        and targets.device == device
        and teacher.device == device
        and (
            teacher.shape[0] == batch
            if index is None
            else index.shape == (batch,) and index.dtype in _INTEGERS and index.device == device
        )
        and (
            weights is None
            or (weights.shape == (batch,) and weights.dtype in _FLOATS and weights.device == device)
        )
        and type(alpha) in (float, int)
        and 0 <= alpha <= 1
        and type(temperature) in (float, int)
        and 0 < temperature < math.inf
    )
    if not fine:
        _explain(student, targets, teacher, index, alpha, temperature, weights)
    if values:
        _check_values(student, targets, teacher, index, alpha)


_FLOATS = frozenset({torch.float32, torch.bfloat16, torch.float16, torch.float64})
_INTEGERS = frozenset({torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8})


def _explain(
    student: torch.Tensor,
    targets: torch.Tensor,
    teacher: torch.Tensor,
    index: torch.Tensor | None,
    alpha: float,
    temperature: float,
    weights: torch.Tensor | None,
) -> None:
    """The one-line error for what :func:`_check`'s fast test found wrong."""
    for name, logits in (("student_logits", student), ("teacher_logits", teacher)):
        if logits.dim() != 2:
            raise DataPruningError(
                f"{name} must be 2-D (batch, classes), got shape {tuple(logits.shape)}; "
                "flatten the extra dimensions into the batch"
            )
        if not logits.is_floating_point():
            raise DataPruningError(
                f"{name} must be float logits (float32 or bfloat16), got {logits.dtype}; "
                "cast them with .float()"
            )
    batch, classes = student.shape
    if classes == 0:
        raise DataPruningError("student_logits have 0 classes; give at least one class column")
    if teacher.shape[1] != classes:
        raise DataPruningError(
            f"teacher_logits have {teacher.shape[1]} classes but student_logits have {classes}; "
            "the teacher must score the same classes as the student"
        )
    if targets.dim() != 1 or targets.shape[0] != batch:
        raise DataPruningError(
            f"targets have shape {tuple(targets.shape)}; they must be one label per row of "
            f"student_logits, shape ({batch},)"
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise DataPruningError(
            f"targets must be integer class labels, got {targets.dtype}; cast them with .long()"
        )
    if index is None:
        if teacher.shape[0] != batch:
            raise DataPruningError(
                f"teacher_logits have {teacher.shape[0]} rows but the batch has {batch}; pass "
                "index= with each example's row in teacher_logits"
            )
    else:
        if index.dim() != 1 or index.shape[0] != batch:
            raise DataPruningError(
                f"index has shape {tuple(index.shape)}; it must hold one teacher row per "
                f"example, shape ({batch},)"
            )
        if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
            raise DataPruningError(
                f"index must hold integer rows of teacher_logits, got {index.dtype}; "
                "cast it with .long()"
            )
    if weights is not None and (weights.shape != (batch,) or not weights.is_floating_point()):
        raise DataPruningError(
            f"weights must be a float tensor of shape ({batch},), one per example; got "
            f"{weights.dtype} of shape {tuple(weights.shape)}"
        )
    if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature)):
        raise DataPruningError(f"temperature {temperature!r} must be a finite number > 0")
    if temperature <= 0:
        raise DataPruningError(f"temperature {temperature} must be > 0 (1 to 8 is usual)")
    if not (isinstance(alpha, numbers.Real) and 0 <= alpha <= 1):
        raise DataPruningError(
            f"alpha {alpha!r} must lie in [0, 1] (0: labels only, 1: teacher only)"
        )
    tensors = {"targets": targets, "teacher_logits": teacher, "index": index, "weights": weights}
    for name, tensor in tensors.items():
        if tensor is not None and tensor.device != student.device:
            raise DataPruningError(
                f"{name} on {tensor.device} but student_logits on {student.device}; "
                "move both to one device"
            )


def _check_values(
    student: torch.Tensor,
    targets: torch.Tensor,
    teacher: torch.Tensor,
    index: torch.Tensor | None,
    alpha: float,
) -> None:
    """Labels in ``[0, C)`` and teacher rows in range, for CPU tensors (see the module docstring)."""
    batch, classes = student.shape
    # Value checks would synchronise a GPU every step: CPU only.
    if student.device.type == "cpu" and batch > 0:
        low, high = (int(v) for v in torch.aminmax(targets))
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise DataPruningError(
                f"target label {bad} is out of range for {classes} classes; labels must lie "
                f"in [0, {classes - 1}]"
            )
        if index is not None and (alpha != 0):
            rows = teacher.shape[0]
            low, high = (int(v) for v in torch.aminmax(index))
            if low < 0 or high >= rows:
                bad = low if low < 0 else high
                raise DataPruningError(
                    f"index {bad} is out of range for teacher_logits with {rows} rows; "
                    f"indices must lie in [0, {rows - 1}]"
                )


class _FusedKDLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        student: torch.Tensor,
        targets: torch.Tensor,
        teacher: torch.Tensor,
        index: torch.Tensor | None,
        weights: torch.Tensor | None,
        alpha: float,
        temperature: float,
    ) -> torch.Tensor:
        loss, grad = _launch(
            student,
            targets,
            teacher,
            index,
            weights,
            alpha,
            temperature,
            with_grad=ctx.needs_input_grad[0],
        )
        if grad is not None:
            ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        # In place, as Liger does: the B×C gradient is not allocated twice. A second
        # backward through a retained graph is refused by autograd (the saved tensor's
        # version changed) instead of silently scaling the gradient twice.
        grad.mul_(grad_output.unsqueeze(1))
        return grad, None, None, None, None, None, None


def _launch(
    student: torch.Tensor,
    targets: torch.Tensor,
    teacher: torch.Tensor,
    index: torch.Tensor | None,
    weights: torch.Tensor | None,
    alpha: float,
    temperature: float,
    *,
    with_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    batch, classes = student.shape
    # Rows may be strided (a slice of a bigger table); classes must be contiguous.
    if student.stride(1) != 1:
        student = student.contiguous()
    if teacher.stride(1) != 1:
        teacher = teacher.contiguous()
    targets = targets.contiguous()
    has_kd = alpha != 0
    loss = torch.empty(batch, dtype=torch.float32, device=student.device)
    # Without a gradient to keep, the kernel's gradient pointer is never written.
    grad = (
        torch.empty((batch, classes), dtype=student.dtype, device=student.device)
        if with_grad
        else loss
    )
    block, rows, n_blocks, num_warps = _config(classes)
    grid = (triton.cdiv(batch, rows),)
    device = torch.cuda.device(student.device) if student.is_cuda else contextlib.nullcontext()
    with device:
        _kd_loss_kernel[grid](
            student,
            student.stride(0),
            teacher if has_kd else student,
            teacher.stride(0) if has_kd else 0,
            targets,
            index.contiguous() if index is not None else targets,
            weights.contiguous() if weights is not None else loss,
            loss,
            grad,
            grad.stride(0) if with_grad else 0,
            batch,
            classes,
            teacher.shape[0],
            float(alpha),
            float(temperature),
            HAS_KD=has_kd,
            HAS_INDEX=index is not None,
            HAS_WEIGHTS=weights is not None,
            WITH_GRAD=with_grad,
            ONE_BLOCK=classes <= block,
            # A compile-time loop count: one compile per class count above MAX_BLOCK
            # (a model has one), and Triton 3.6's interpreter cannot range over a
            # run-time bound with NumPy 2 (int() of a 1-element array).
            N_BLOCKS=n_blocks,
            ROWS=rows,
            BLOCK=block,
            num_warps=num_warps,
        )
    return loss, (grad if with_grad else None)


if HAVE_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _log_normalisers(m_s, d_s, m_q, d_q, m_p, d_p, HAS_KD: tl.constexpr):
        # log-sum-exp of softmax(s), softmax(s/T) and softmax(t/T) from the running
        # maxima and sums; without KD only the first is used.
        lse_s = m_s + tl.log(d_s)
        lse_q = lse_s
        lse_p = lse_s
        if HAS_KD:
            lse_q = m_q + tl.log(d_q)
            lse_p = m_p + tl.log(d_p)
        return lse_s, lse_q, lse_p

    @triton.jit
    def _row_stats(s, t, valid, inv_temp, m_s, d_s, m_q, d_q, m_p, d_p, HAS_KD: tl.constexpr):
        # One block of the online softmax: fold the block's maxima and sums of exp into
        # the running ones for softmax(s), softmax(s/T) and softmax(t/T).
        x = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_s, tl.max(x, axis=1))
        d_s = d_s * tl.exp(m_s - m_new) + tl.sum(tl.exp(x - m_new[:, None]), axis=1)
        m_s = m_new
        if HAS_KD:
            xq = x * inv_temp
            m_new = tl.maximum(m_q, tl.max(xq, axis=1))
            d_q = d_q * tl.exp(m_q - m_new) + tl.sum(tl.exp(xq - m_new[:, None]), axis=1)
            m_q = m_new
            xp = tl.where(valid, t * inv_temp, float("-inf"))
            m_new = tl.maximum(m_p, tl.max(xp, axis=1))
            d_p = d_p * tl.exp(m_p - m_new) + tl.sum(tl.exp(xp - m_new[:, None]), axis=1)
            m_p = m_new
        return m_s, d_s, m_q, d_q, m_p, d_p

    @triton.jit
    def _grad_and_kl(
        s,
        t,
        valid,
        is_target,
        inv_temp,
        lse_s,
        lse_q,
        lse_p,
        ce_scale,
        kd_scale,
        HAS_KD: tl.constexpr,
    ):
        # The block's gradient (before the per-example weight) and its share of KL.
        p_s = tl.exp(s - lse_s[:, None])
        grad = ce_scale * (p_s - tl.where(is_target, 1.0, 0.0))
        kl = tl.zeros_like(lse_s)
        if HAS_KD:
            log_q = s * inv_temp - lse_q[:, None]
            log_p = t * inv_temp - lse_p[:, None]
            p_t = tl.exp(log_p)
            grad += kd_scale * (tl.exp(log_q) - p_t)
            kl = tl.sum(tl.where(valid, p_t * (log_p - log_q), 0.0), axis=1)
        return grad, kl

    @triton.jit
    def _kd_loss_kernel(
        S_ptr,
        s_row_stride,
        T_ptr,
        t_row_stride,
        Y_ptr,
        IDX_ptr,
        W_ptr,
        LOSS_ptr,
        G_ptr,
        g_row_stride,
        n_rows,
        n_cols,
        n_teacher_rows,
        alpha,
        temperature,
        HAS_KD: tl.constexpr,
        HAS_INDEX: tl.constexpr,
        HAS_WEIGHTS: tl.constexpr,
        WITH_GRAD: tl.constexpr,
        ONE_BLOCK: tl.constexpr,
        N_BLOCKS: tl.constexpr,
        ROWS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        # int64 offsets: B·C can pass 2**31 (8192 × 262144).
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
        row_ok = rows < n_rows
        # Tail rows read the last row (so no NaN is formed) and store nothing.
        rows = tl.minimum(rows, n_rows - 1)
        y = tl.load(Y_ptr + rows).to(tl.int64)
        ok = (y >= 0) & (y < n_cols)
        y = tl.where(ok, y, 0)
        s_base = S_ptr + rows * s_row_stride
        t_base = T_ptr
        if HAS_KD:
            if HAS_INDEX:  # noqa: SIM108 (a constexpr branch: only one side is compiled)
                t_rows = tl.load(IDX_ptr + rows).to(tl.int64)
            else:
                t_rows = rows
            t_ok = (t_rows >= 0) & (t_rows < n_teacher_rows)
            ok = ok & t_ok
            t_base = T_ptr + tl.where(t_ok, t_rows, 0) * t_row_stride
        inv_temp = 1.0 / temperature
        ce_scale = 1.0 - alpha
        kd_scale = alpha * temperature
        if HAS_WEIGHTS:
            w = tl.load(W_ptr + rows).to(tl.float32)
        else:
            w = tl.full([ROWS], 1.0, tl.float32)
        s_y = tl.load(s_base + y).to(tl.float32)

        m_s = tl.full([ROWS], float("-inf"), tl.float32)
        d_s = tl.zeros([ROWS], tl.float32)
        m_q = m_s
        d_q = d_s
        m_p = m_s
        d_p = d_s
        cols = tl.arange(0, BLOCK)
        if ONE_BLOCK:
            # The whole row fits one block: read it once, keep it in registers.
            valid = cols[None, :] < n_cols
            s = tl.load(s_base[:, None] + cols[None, :], mask=valid, other=0.0).to(tl.float32)
            t = s
            if HAS_KD:
                t = tl.load(t_base[:, None] + cols[None, :], mask=valid, other=0.0)
                t = t.to(tl.float32)
            m_s, d_s, m_q, d_q, m_p, d_p = _row_stats(
                s, t, valid, inv_temp, m_s, d_s, m_q, d_q, m_p, d_p, HAS_KD
            )
            lse_s, lse_q, lse_p = _log_normalisers(m_s, d_s, m_q, d_q, m_p, d_p, HAS_KD)
            is_target = cols[None, :] == y[:, None]
            grad, kl = _grad_and_kl(
                s, t, valid, is_target, inv_temp, lse_s, lse_q, lse_p, ce_scale, kd_scale, HAS_KD
            )
            if WITH_GRAD:
                grad = tl.where(ok[:, None], grad * w[:, None], float("nan"))
                tl.store(
                    G_ptr + rows[:, None] * g_row_stride + cols[None, :],
                    grad.to(G_ptr.dtype.element_ty),
                    mask=row_ok[:, None] & valid,
                )
        else:
            # First sweep: running maxima and sums over the row's blocks.
            for start in range(0, N_BLOCKS * BLOCK, BLOCK):
                offsets = start + cols
                valid = offsets[None, :] < n_cols
                s = tl.load(s_base[:, None] + offsets[None, :], mask=valid, other=0.0)
                s = s.to(tl.float32)
                t = s
                if HAS_KD:
                    t = tl.load(t_base[:, None] + offsets[None, :], mask=valid, other=0.0)
                    t = t.to(tl.float32)
                m_s, d_s, m_q, d_q, m_p, d_p = _row_stats(
                    s, t, valid, inv_temp, m_s, d_s, m_q, d_q, m_p, d_p, HAS_KD
                )
            lse_s, lse_q, lse_p = _log_normalisers(m_s, d_s, m_q, d_q, m_p, d_p, HAS_KD)
            # Second sweep: the gradient, and KL from the final normalisers.
            kl = tl.zeros([ROWS], tl.float32)
            for start in range(0, N_BLOCKS * BLOCK, BLOCK):
                offsets = start + cols
                valid = offsets[None, :] < n_cols
                s = tl.load(s_base[:, None] + offsets[None, :], mask=valid, other=0.0)
                s = s.to(tl.float32)
                t = s
                if HAS_KD:
                    t = tl.load(t_base[:, None] + offsets[None, :], mask=valid, other=0.0)
                    t = t.to(tl.float32)
                is_target = offsets[None, :] == y[:, None]
                grad, kl_block = _grad_and_kl(
                    s,
                    t,
                    valid,
                    is_target,
                    inv_temp,
                    lse_s,
                    lse_q,
                    lse_p,
                    ce_scale,
                    kd_scale,
                    HAS_KD,
                )
                kl += kl_block
                if WITH_GRAD:
                    grad = tl.where(ok[:, None], grad * w[:, None], float("nan"))
                    tl.store(
                        G_ptr + rows[:, None] * g_row_stride + offsets[None, :],
                        grad.to(G_ptr.dtype.element_ty),
                        mask=row_ok[:, None] & valid,
                    )
        loss = ce_scale * (lse_s - s_y)
        if HAS_KD:
            loss += alpha * temperature * temperature * kl
        loss = tl.where(ok, loss * w, float("nan"))
        tl.store(LOSS_ptr + rows, loss, mask=row_ok)
