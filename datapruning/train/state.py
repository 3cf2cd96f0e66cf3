"""The resume state of a training run: everything a bit-exact continuation needs.

One object gathers what used to be spread over the loop: model, optimizer, LR
scheduler, fp16 gradient scaler, sampler (epoch and draws), the augmentation's
generator, the random states (torch, CUDA, numpy, Python), the loop's own
progress (step, position in the epoch, running loss, clocks, the evaluations
logged so far) and each algorithm's own state under its name (the pruner's
masks and schedule position, online selection's proxy model). ``save`` writes it atomically as ``resume.pt``;
``read`` refuses a file from a run with other settings (its config hash) or
of another layout (``format_version``, ``RESUME_FORMAT``: 1 is the first
recorded one, 2 keeps the algorithms' states by name; an unversioned file is from an
older release);
``load_state_dict`` puts it all back, after which the loop continues as if it
had never stopped (on CPU the final weights match an uninterrupted run bit for
bit, tests/train/test_loop_modes.py).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from datapruning._io import check_format_version
from datapruning.data.samplers import IndexSampler
from datapruning.errors import DataPruningError
from datapruning.train import distributed
from datapruning.train.checkpoint import save_checkpoint

if TYPE_CHECKING:
    from datapruning.train.algorithms.base import Algorithm

# The resume state's file in a run directory (while the run is unfinished).
RESUME_NAME = "resume.pt"
# Its layout; bump it when a key changes meaning, so an older file is refused, not misread.
RESUME_FORMAT = 2
# What differs between the processes of one run (datapruning.train.distributed): a resume
# point of a run on several holds each rank's under "ranks", beside the shared weights.
RANK_KEYS = ("sampler", "progress", "rng", "augment", "algorithms")


@dataclass
class Progress:
    """The loop's own counters, saved as JSON inside the resume state."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of ``epoch`` already taken
    loss_sum: float = 0.0
    seen: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    compile_seconds: float = 0.0
    examples: int = 0  # examples trained on (forward and backward), the whole run
    scored: int = 0  # examples only scored (forward without gradient: online selection)
    selection_seconds: float = 0.0  # choosing examples: online scoring, InfoBatch's plan/updates
    curve: list[tuple[float, float]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, text: str) -> Progress:
        progress = cls(**json.loads(text))
        progress.curve = [(float(s), float(a)) for s, a in progress.curve]
        return progress


class TrainState:
    """What a resume checkpoint holds, around the run's live objects."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        sampler: IndexSampler,
        scaler: torch.amp.GradScaler | None = None,
        device: torch.device | None = None,
        augmenter: Any | None = None,
        algorithms: Sequence[Algorithm] = (),
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.sampler, self.scaler = sampler, scaler
        # The augmentation's own generator (datapruning.train.augment.Augmenter).
        self.augmenter = augmenter
        self.algorithms = list(algorithms)
        self.device = device or torch.device("cpu")
        self.progress = Progress()

    def state_dict(self, config_hash: str) -> dict[str, Any]:
        return {
            "format_version": RESUME_FORMAT,
            "config_hash": config_hash,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "sampler": self.sampler.state_dict(),
            "progress": json.dumps(asdict(self.progress)),
            "rng": rng_state(self.device),
            "augment": self.augmenter.state_dict() if self.augmenter is not None else None,
            "algorithms": {a.name: a.state_dict() for a in self.algorithms},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything from :meth:`state_dict` (as :meth:`read` returns it); a
        run on several processes takes this rank's own part of it."""
        if "ranks" in state:
            state = {**state, **state["ranks"][distributed.current().rank]}
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.progress = Progress.from_json(state["progress"])
        set_rng_state(state["rng"], self.device)
        if self.augmenter is not None and state.get("augment") is not None:
            self.augmenter.load_state_dict(state["augment"])
        for algorithm in self.algorithms:
            saved = state["algorithms"].get(algorithm.name)
            if saved is not None:
                algorithm.load_state_dict(saved)

    def save(self, path: Path, config_hash: str) -> None:
        save_checkpoint(path, self.state_dict(config_hash))

    @staticmethod
    def read(path: Path, config_hash: str) -> dict[str, Any] | None:
        """The resume state at ``path`` (None if there is none), if it is this run's."""
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a corrupt file
            raise DataPruningError(
                f"resume checkpoint {str(path)!r} cannot be read ({exc.__class__.__name__}); "
                "delete it to start the run over"
            ) from None
        if isinstance(state, dict):
            check_format_version(
                path,
                state.get("format_version"),
                RESUME_FORMAT,
                "delete it to start the run over, or finish the run with the release that wrote it",
            )
        if not isinstance(state, dict) or state.get("config_hash") != config_hash:
            found = state.get("config_hash") if isinstance(state, dict) else None
            raise DataPruningError(
                f"{str(path)!r} is from a run with a different config ({found} != {config_hash}); "
                f"rerun with the same settings, or use another run directory"
            )
        return state


@contextmanager
def forked_rngs(device: torch.device) -> Iterator[None]:
    """Restore torch's (and the CUDA device's), numpy's and Python's random states on exit."""
    cuda = device.type == "cuda"
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[device] if cuda else []):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def rng_state(device: torch.device) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.as_tensor(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
