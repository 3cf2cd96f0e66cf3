"""One run over several processes: PyTorch's DDP, started by torchrun.

``torchrun --nproc_per_node N -m datapruning train CONFIG`` (or ``datapruning train
CONFIG --nproc N``, which runs torchrun for you) starts N copies of the run. Each
joins the process group from torchrun's environment (:func:`join`: NCCL on CUDA,
gloo on CPU), takes its device (``cuda:LOCAL_RANK``), trains the model wrapped in
``DistributedDataParallel`` on its share of every batch, and keeps the global batch
the configured ``train.batch_size`` (each rank takes ``batch_size / N``), so a
recipe means the same thing at any scale: the samplers give rank ``r`` positions
``r, r + N, ...`` of the epoch's order, so the ranks' step-``k`` batches together
are exactly the one-process run's step-``k`` batch, and DDP's averaged gradient is
its gradient.

What the ranks must agree on goes through :class:`World`, over a gloo group even
when the gradients go over NCCL (host numbers, no device sync): a stop signal
(checked at each step boundary, so all ranks stop at the same step), the test
accuracy (each rank evaluates its share of the test set), the training clock (the
slowest rank's) and the counts (summed). Only rank 0 writes files; a resume point
carries every rank's own state (random generators, sampler, algorithms, partial
epoch loss) beside rank 0's weights and optimizer, which all ranks share.

A rank that dies (a kill -9, an out-of-memory kill) breaks the others' next
collective: gloo reports the closed connection at once, and :func:`collective`
turns that into one line saying the run lost a process and how to resume.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from datapruning.errors import DataPruningError

# torchrun's environment: a process it started has these.
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Generous: the first step may compile, a rank may evaluate or cache logits first.
_TIMEOUT = timedelta(minutes=30)
_LEAVE_TIMEOUT = timedelta(seconds=20)


def launched() -> bool:
    """Whether this process is one of several that torchrun started."""
    return all(key in os.environ for key in _ENV) and int(os.environ["WORLD_SIZE"]) > 1


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank, number of ranks, backend and host group."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    # A gloo group for host-side numbers (CPU tensors), also when gradients use NCCL.
    control: Any = None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (rank 0 only)."""
        return self.rank == 0

    def reduce(self, values: Sequence[float], op: str = "sum") -> list[float]:
        """``values`` combined over the ranks (``sum``, ``max`` or ``min``), in float64."""
        if not self.distributed:
            return [float(v) for v in values]
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        with collective(self):
            dist.all_reduce(tensor, op=ops[op], group=self.control)
        return tensor.tolist()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
        if not self.distributed:
            return [obj]
        out: list[Any] | None = [None] * self.size if self.writes else None
        with collective(self):
            dist.gather_object(obj, out, dst=0, group=self.control)
        return out

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` (a CPU tensor of the same shape and dtype on every rank)."""
        if self.distributed:
            with collective(self):
                dist.broadcast(tensor, src=0, group=self.control)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            with collective(self):
                dist.barrier(group=self.control)


SINGLE = World()


def current() -> World:
    """The world this process is in: the process group's, else one process."""
    return _WORLD


_WORLD = SINGLE


def join(device: str) -> World:
    """Join the process group torchrun's environment describes (a no-op without one).

    ``device`` is ``train.device``: NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``),
    gloo on CPU. Called once per process; later calls return the same world.
    """
    global _WORLD
    if _WORLD.distributed or not launched():
        return _WORLD
    cuda = device.startswith("cuda")
    if device.startswith("mps"):
        raise DataPruningError("several processes on mps are not supported; use cpu or cuda")
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise DataPruningError(
                f"local rank {local_rank} needs a CUDA device but this machine has {count}; "
                "start at most that many processes per node, or set train.device=cpu"
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    control = dist.new_group(backend="gloo", timeout=_TIMEOUT) if backend != "gloo" else None
    _WORLD = World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=local_rank,
        backend=backend,
        control=control,
    )
    return _WORLD


def leave() -> None:
    """Leave the process group (at the end of the process), if this process joined one."""
    global _WORLD
    if _WORLD.distributed and dist.is_initialized():
        # Together: a rank tearing its connections down while another still uses them
        # made gloo abort that other process at exit now and then.
        # Bounded: a rank that left early (or died) must not keep the others here.
        with contextlib.suppress(RuntimeError, dist.DistError):
            dist.monitored_barrier(group=_WORLD.control, timeout=_LEAVE_TIMEOUT)
        dist.destroy_process_group()
    _WORLD = SINGLE


def rank_device(device: torch.device, world: World) -> torch.device:
    """The rank's device: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if world.distributed and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


def per_rank_batch(batch_size: int, world: World, name: str = "train.batch_size") -> int:
    """This rank's share of a global batch; refused when the ranks cannot share it evenly."""
    if batch_size % world.size:
        raise DataPruningError(
            f"{name} is {batch_size}, which {world.size} processes cannot share evenly; "
            f"use a multiple of {world.size} (the global batch stays what you set)"
        )
    return batch_size // world.size


@contextmanager
def collective(world: World) -> Iterator[None]:
    """A collective's failure (a rank died) as one line, not a backend traceback."""
    try:
        yield
    except (RuntimeError, dist.DistError) as exc:  # gloo and NCCL raise RuntimeError kinds
        if not world.distributed:
            raise
        detail = _first_sentence(str(exc)) or type(exc).__name__
        raise DataPruningError(
            f"rank {world.rank}: another of the {world.size} processes stopped during the run "
            f"({detail[:160]}); run the same command again to continue from the last resume "
            "point"
        ) from None


def _first_sentence(message: str) -> str:
    """A backend error's gist: its first sentence, without gloo's source location."""
    text = message.strip().splitlines()[0] if message.strip() else ""
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text)
    return text.split(". ")[0][:200]
