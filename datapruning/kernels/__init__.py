"""Fused kernels for the training step: Triton on CUDA, a torch reference elsewhere.

One module per kernel (as Liger-Kernel and torchao keep theirs): a Triton
implementation, a pure-torch reference that defines what the kernel computes,
and a dispatcher that picks one per call. The first call of each kernel
variant in a process probes it (compile, a small launch, a comparison with the
reference); a variant that fails takes the reference from then on, with one
warning, and :func:`paths_taken` says which path each kernel actually ran and
why (a training run calls :func:`reset_paths` at its start and puts
``paths_taken()`` in its summary). Tests compare the two paths on CPU by running
the Triton path under Triton's interpreter (``TRITON_INTERPRET=1``).

This package imports nothing but torch and triton (and ``datapruning.errors``,
which imports nothing), so it runs on a machine that has only those two.
"""

from datapruning.kernels._dispatch import (
    BACKEND_ENV,
    HAVE_TRITON,
    KernelPath,
    backend,
    forced_backend,
    paths_taken,
    reset_paths,
    use_triton,
)

__all__ = [
    "BACKEND_ENV",
    "HAVE_TRITON",
    "KernelPath",
    "backend",
    "forced_backend",
    "paths_taken",
    "reset_paths",
    "use_triton",
]
