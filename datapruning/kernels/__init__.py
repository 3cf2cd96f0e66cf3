"""Fused kernels for the training step: Triton on CUDA, a torch reference elsewhere.

One module per kernel (as Liger-Kernel and torchao keep theirs): a Triton
implementation, a pure-torch reference that defines what the kernel computes,
and a dispatcher that picks one per call through :func:`use_triton`. Tests
compare the two on CPU by running the Triton path under Triton's interpreter
(``TRITON_INTERPRET=1``).

This package imports nothing but torch and triton (and ``datapruning.errors``,
which imports nothing), so it runs on a machine that has only those two.
"""

from datapruning.kernels._dispatch import (
    BACKEND_ENV,
    HAVE_TRITON,
    backend,
    forced_backend,
    use_triton,
)

__all__ = ["BACKEND_ENV", "HAVE_TRITON", "backend", "forced_backend", "use_triton"]
