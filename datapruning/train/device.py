"""What a run's device can do, checked before the run starts, and its clock's sync.

CUDA runs asynchronously: ``perf_counter`` read right after a step returns
measures how fast the host queued the kernels, not how long the GPU took. The
training clock therefore synchronises the device when it starts and stops
(:func:`synchronizer`), and only there, so the GPU keeps a queue of steps in
between; the loop starts and stops it around stretches of steps (an epoch, or
the steps between resume checkpoints), not around every step.

Each accelerator setting is checked here against the device, so a setting the
device cannot run is a one-line error naming the setting, before the run
directory is touched:

- ``device``: cuda needs a visible CUDA device (cuda:N one with that index);
- ``precision``: bf16 autocast runs on CPU and on CUDA GPUs that support bf16;
  fp16 only on CUDA (CPU autocast's fp16 is slow and unscaled);
- ``compile``: torch.compile needs a C++ compiler on CPU, Triton on CUDA, and a
  Python that TorchDynamo supports;
- ``channels_last``: only models with 2-D convolutions gain from it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from datapruning.errors import DataPruningError

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a torch device present on this machine."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DataPruningError(
            f"train.device {name!r} is not a device; use cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DataPruningError(
                f"train.device={name} but this machine has no CUDA device; set train.device=cpu"
            )
        if device.index is not None and device.index >= count:
            raise DataPruningError(
                f"train.device={name} but this machine has {count} CUDA device(s) "
                f"(cuda:0..cuda:{count - 1}); pick one of them"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DataPruningError(
                f"train.device={name} but MPS is not available here; set train.device=cpu"
            )
    elif device.type != "cpu":
        raise DataPruningError(f"train.device {name!r}: use cpu, cuda, cuda:N or mps")
    return device


@dataclass(frozen=True)
class Precision:
    """Autocast for the forward pass and, for fp16, a gradient scaler."""

    name: str
    device: torch.device

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES[self.name]

    def autocast(self) -> AbstractContextManager[object]:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16's gradient scaler (its range underflows small gradients); None otherwise."""
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None


def resolve_precision(name: str, device: torch.device) -> Precision:
    """``train.precision`` on ``device``, refused where the device cannot run it."""
    if name == "fp16" and device.type != "cuda":
        raise DataPruningError(
            f"train.precision=fp16 needs a CUDA device, not {device}; use bf16 or fp32"
        )
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DataPruningError(
            f"train.precision=bf16: this GPU ({torch.cuda.get_device_name(device)}) "
            "has no bf16; use fp16 or fp32"
        )
    if name == "bf16" and device.type == "mps":
        raise DataPruningError("train.precision=bf16 is not supported on mps; use fp32")
    return Precision(name, device)


def check_compile(device: torch.device) -> None:
    """Refuse ``train.compile`` where torch.compile cannot run."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise DataPruningError(
            "train.compile: torch.compile does not support this Python; set train.compile=false"
        )
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise DataPruningError(
                "train.compile on CUDA needs Triton (pip install triton); set train.compile=false"
            )
    elif device.type == "cpu":
        if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
            raise DataPruningError(
                "train.compile on CPU needs a C++ compiler (g++ or clang++) on PATH; "
                "set train.compile=false"
            )
    else:
        raise DataPruningError(f"train.compile is not supported on {device}; use cpu or cuda")


def check_channels_last(model: nn.Module, model_name: str) -> None:
    """Refuse ``train.channels_last`` for a model without 2-D convolutions."""
    if not any(isinstance(module, nn.Conv2d) for module in model.modules()):
        raise DataPruningError(
            f"train.channels_last applies to models with 2-D convolutions; {model_name} on "
            "these inputs has none: set train.channels_last=false"
        )


def synchronizer(device: torch.device) -> Callable[[], None] | None:
    """What waits for ``device``'s queued work (None: the device is synchronous)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return None
