"""Which implementation a kernel call takes, and a record of the one that actually ran.

``DATAPRUNING_KERNELS`` (read once, at import) chooses:

- unset or ``auto``: Triton for CUDA tensors when ``triton`` imports, the torch
  reference for everything else;
- ``triton``: always Triton; CPU tensors then need ``TRITON_INTERPRET=1`` (the
  interpreter, which is how the tests exercise the kernels without a GPU);
- ``torch``: always the reference (the escape hatch).

:func:`forced_backend` overrides the choice inside a ``with`` block, so one
process (a test, a benchmark) can run both paths on the same inputs.

Probe, then trust. The Triton path has never been able to prove itself before a
user's run (the kernels were written without a GPU), so the first time a kernel
is used in a process for one *variant* (its compile-time constants, dtypes and
device: what makes Triton compile a new binary) :func:`take_kernel` runs a probe:
compile, launch on a small input, synchronise, compare with the torch
reference. A probe that raises or disagrees marks the variant as failed for the
rest of the process: the call and every later one of that variant take the
reference, one ``RuntimeWarning`` says why, and :func:`paths_taken` records the
path that ran and the reason. A launch that raises after a good probe
(:func:`launch_failed`) does the same. So a kernel can make a run slower, never
break it or change its result.

What the record holds is what ran: the wrappers call :func:`record` on every
call (a dict look-up), not the dispatcher's intention. :func:`reset_paths`
clears it (a training run does so at its start); the probes' verdicts stay for
the process.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypedDict, TypeVar

import torch

from datapruning.errors import DataPruningError

BACKEND_ENV = "DATAPRUNING_KERNELS"
_CHOICES = ("auto", "triton", "torch")

try:
    import triton  # noqa: F401

    HAVE_TRITON = True
except ImportError:  # the reference path needs only torch
    HAVE_TRITON = False


class KernelPath(TypedDict):
    """What one kernel did in a run: ``path`` that ran and why (see :func:`paths_taken`)."""

    path: str
    reason: str


def _from_env() -> str:
    value = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        raise DataPruningError(
            f"{BACKEND_ENV}={value!r} is not a kernel backend; set it to one of {', '.join(_CHOICES)}"
        )
    return value


_backend = _from_env()

# (kernel, variant) -> None (probed and trusted) or the reason it is not used.
_verdicts: dict[tuple[str, Hashable], str | None] = {}
# kernel -> {path: reason}: every path that ran since the last reset_paths().
_taken: dict[str, dict[str, str]] = {}

V = TypeVar("V", bound=Hashable)
_UNPROBED: Any = object()
_warned: set[tuple[str, Hashable]] = set()

PROBED = "probed: compiled, launched and matched the torch reference"


def backend() -> str:
    """The backend in force: ``auto``, ``triton`` or ``torch``."""
    return _backend


@contextmanager
def forced_backend(name: str) -> Iterator[None]:
    """Use backend ``name`` inside the block, whatever ``DATAPRUNING_KERNELS`` says."""
    global _backend
    if name not in _CHOICES:
        raise DataPruningError(
            f"kernel backend {name!r} unknown; choose one of {', '.join(_CHOICES)}"
        )
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


def interpreting() -> bool:
    """Whether Triton kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether the backend in force sends a kernel call on ``tensors`` to Triton.

    This is the intention only; a variant whose probe failed still takes the
    reference (:func:`take_kernel`), and :func:`paths_taken` says what ran.

    Raises:
        DataPruningError: Triton is forced but not installed, or forced on CPU
            tensors outside the interpreter.
    """
    return reference_reason(tensors) is None


def reference_reason(tensors: tuple[torch.Tensor, ...]) -> str | None:
    """Why the backend sends ``tensors`` to the reference, or None for Triton.

    Raises:
        DataPruningError: as :func:`use_triton`.
    """
    if _backend == "torch":
        return f"{BACKEND_ENV}=torch"
    on_cuda = all(t.is_cuda for t in tensors)
    if _backend == "auto":
        if not on_cuda:
            return "CPU tensors: the Triton path is for CUDA"
        return None if HAVE_TRITON else "triton is not installed"
    if not HAVE_TRITON:
        raise DataPruningError(
            f"{BACKEND_ENV}=triton but the triton package is not installed; "
            f"pip install triton, or set {BACKEND_ENV}=torch"
        )
    if not on_cuda and not interpreting():
        raise DataPruningError(
            f"{BACKEND_ENV}=triton on CPU tensors needs Triton's interpreter; "
            f"set TRITON_INTERPRET=1, or set {BACKEND_ENV}=torch"
        )
    return None


def take_kernel(
    kernel: str,
    variant: Callable[[], V],
    tensors: tuple[torch.Tensor, ...],
    probe: Callable[[V], str | None],
    *,
    reference: str = "torch",
) -> bool:
    """Whether this call of ``kernel`` should launch its fast path.

    False: the reference runs, and is recorded here with its reason. True: the
    caller launches, then calls :func:`record` (``record(kernel, "triton",
    PROBED)``) once the launch has run, or :func:`launch_failed` if it raised.

    ``variant()`` names what one compiled binary serves (constexprs, dtypes,
    device); it is only called when the backend would take the fast path. The
    first call of a variant runs ``probe(variant)``, which launches the kernel on
    a small input and returns None when it matches the reference, else what
    differed; a probe that raises fails too. ``reference`` is the name the record
    gives the reference path.
    """
    reason = reference_reason(tensors)
    if reason is None:
        key = (kernel, variant())
        verdict = _verdicts.get(key, _UNPROBED)
        if verdict is _UNPROBED:
            verdict = _verdicts[key] = _run_probe(kernel, key[1], tensors, probe)
        if verdict is None:
            return True  # the caller records the fast path once its launch has run
        reason = verdict
    record(kernel, reference, reason)  # type: ignore[arg-type]
    return False


def _run_probe(
    kernel: str,
    variant: V,
    tensors: tuple[torch.Tensor, ...],
    probe: Callable[[V], str | None],
) -> str | None:
    try:
        mismatch = probe(variant)
        if tensors and tensors[0].is_cuda:  # an asynchronous fault shows here, not later
            torch.cuda.synchronize(tensors[0].device)
    except Exception as exc:  # a kernel must never break a run: any failure falls back
        mismatch = f"probe failed: {_one_line(exc)}"
    else:
        if mismatch is not None:
            mismatch = f"probe mismatch: {mismatch}"
    if mismatch is not None:
        _warn(kernel, variant, mismatch)
    return mismatch


def launch_failed(
    kernel: str, variant: Hashable, exc: BaseException, *, reference: str = "torch"
) -> None:
    """A trusted variant raised at launch: use the reference for it from now on, warn once."""
    reason = f"launch failed: {_one_line(exc)}"
    _verdicts[(kernel, variant)] = reason
    _warn(kernel, variant, reason)
    record(kernel, reference, reason)


def record(kernel: str, path: str, reason: str) -> None:
    """Note that a call of ``kernel`` ran ``path`` for ``reason`` (cheap: called every call)."""
    paths = _taken.get(kernel)
    if paths is None:
        _taken[kernel] = {path: reason}
    elif path not in paths:
        paths[path] = reason
    elif paths[path] != reason and reason not in paths[path].split("; "):
        paths[path] = f"{paths[path]}; {reason}"


def paths_taken() -> dict[str, KernelPath]:
    """The path each kernel actually ran since :func:`reset_paths`, and why.

    ``{kernel: {"path": ..., "reason": ...}}`` for each kernel called: ``kd_loss``,
    ``masked_sgd``, ``masked_adamw`` and ``nm_mask`` run ``"triton"`` or
    ``"torch"``, ``select`` runs ``"radix"`` or ``"kthvalue"``. A kernel whose
    calls took both paths (a variant fell back, another did not) reads
    ``"torch+triton"`` (names in alphabetical order), each with its reason, joined
    by ``" | "``.
    """
    out: dict[str, KernelPath] = {}
    for kernel, paths in _taken.items():
        names = sorted(paths)
        out[kernel] = {
            "path": "+".join(names),
            "reason": " | ".join(f"{name}: {paths[name]}" for name in names)
            if len(names) > 1
            else paths[names[0]],
        }
    return out


def reset_paths() -> None:
    """Forget which paths ran (the probes' verdicts are kept for the process)."""
    _taken.clear()


def reset_probes() -> None:
    """Forget the probes' verdicts too, so each variant is probed again (tests)."""
    _verdicts.clear()
    _warned.clear()
    _taken.clear()


def _warn(kernel: str, variant: Hashable, reason: str) -> None:
    if (kernel, variant) in _warned:
        return
    _warned.add((kernel, variant))
    warnings.warn(
        f"datapruning kernel {kernel} {variant}: {reason}; its torch reference runs instead",
        RuntimeWarning,
        stacklevel=3,
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def mismatch(
    name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float
) -> str | None:
    """None when ``got`` matches ``want`` within ``atol + rtol·|want|`` (NaN where NaN), else why."""
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    if got.shape != want.shape:
        return f"{name} has shape {tuple(got.shape)}, the reference {tuple(want.shape)}"
    if torch.allclose(got, want, atol=atol, rtol=rtol, equal_nan=True):
        return None
    error = (got - want).abs().nan_to_num(nan=float("inf")).max().item()
    return f"{name} differs from the reference by up to {error:.3g} (atol {atol:g}, rtol {rtol:g})"
