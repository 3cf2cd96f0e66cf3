"""Which implementation a kernel call takes: Triton or the torch reference.

``DATAPRUNING_KERNELS`` (read once, at import) chooses:

- unset or ``auto``: Triton for CUDA tensors when ``triton`` imports, the torch
  reference for everything else;
- ``triton``: always Triton; CPU tensors then need ``TRITON_INTERPRET=1`` (the
  interpreter, which is how the tests exercise the kernels without a GPU);
- ``torch``: always the reference.

:func:`forced_backend` overrides the choice inside a ``with`` block, so one
process (a test, a benchmark) can run both paths on the same inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from datapruning.errors import DataPruningError

BACKEND_ENV = "DATAPRUNING_KERNELS"
_CHOICES = ("auto", "triton", "torch")

try:
    import triton  # noqa: F401

    HAVE_TRITON = True
except ImportError:  # the reference path needs only torch
    HAVE_TRITON = False


def _from_env() -> str:
    value = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        raise DataPruningError(
            f"{BACKEND_ENV}={value!r} is not a kernel backend; set it to one of {', '.join(_CHOICES)}"
        )
    return value


_backend = _from_env()


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
    """Whether a kernel called on ``tensors`` should take its Triton path.

    Raises:
        DataPruningError: Triton is forced but not installed, or forced on CPU
            tensors outside the interpreter.
    """
    if _backend == "torch":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if _backend == "auto":
        return HAVE_TRITON and on_cuda
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
    return True
