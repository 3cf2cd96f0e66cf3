"""Train K scoring models at once, as one batched ensemble.

Scoring models are small, so training them one after another is dominated by
per-step Python and dispatch overhead. Here the K models' parameters are
stacked (``torch.func.stack_module_state``) and every step runs all K forward
and backward passes at once, each model on its own batch: on a CPU through the
folded model of :mod:`datapruning.scoring.folded` (batched GEMMs over the K
models' weights), otherwise as one ``vmap`` of ``functional_call``. The recipe
is the training loop's (:mod:`datapruning.train.schedule`): model ``k`` is
initialised under ``torch.manual_seed(seed_k)``, sees the batches of
``SubsetSampler(indices, shuffle=True, seed=seed_k)`` in the same order, and is
optimised by the config's optimizer (SGD with (Nesterov) momentum, or AdamW)
and per-step LR (optional linear warm-up, then cosine to zero), each model's gradients
clipped to ``train.clip_grad_norm`` on their own (:func:`clip_per_model`). Both updates
are elementwise, so one optimizer over the stacked tensors updates each model
exactly as its own optimizer would; the summed loss gives each model its own gradient. Results
match sequential training up to the rounding of the batched kernels, which
training amplifies (EL2N differs by under 0.01 after 10 epochs on MNIST-1D).
The ensemble trains in float32 and uncompiled whatever ``train.precision`` and
``train.compile`` say (they apply to the loop's runs).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from datapruning._progress import Progress
from datapruning._sections import derive
from datapruning.config import TrainConfig
from datapruning.data.dataset import Dataset
from datapruning.data.samplers import SubsetSampler
from datapruning.data.stream import train_rows
from datapruning.errors import DataPruningError
from datapruning.scoring.folded import fold_model
from datapruning.train.evaluation import eval_mode
from datapruning.train.schedule import make_optimizer, make_scheduler, plan_steps
from datapruning.user import ModelSpec

# Called once per step before the update: logits (K, B, C), labels (K, B), indices (K, B).
BatchHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass
class Ensemble:
    """K models of one architecture as stacked parameters (leading dim K)."""

    base: nn.Module  # on the meta device: the architecture only
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    seeds: list[int]
    # ``base`` for batches of the K models folded into one, (K·B, ...) (folded.py);
    # None: vmap. CPU only, where it was measured against vmap; GraNd's
    # per-example gradients use the plain ``base``.
    folded: nn.Module | None = field(init=False, repr=False)
    _folded_checked: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        self.folded = fold_model(self.base) if self.device.type == "cpu" else None

    def __len__(self) -> int:
        return len(self.seeds)

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def _call_folded(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, ...) -> (K, B, C) through the folded model."""
        assert self.folded is not None
        out = functional_call(self.folded, (self.params, self.buffers), (x.flatten(0, 1),))
        return out.unflatten(0, (len(self), -1))

    def _use_folded(self, example: torch.Tensor) -> bool:
        """Whether the folded model runs; on first use, checked against vmap.

        Folding is right only if the model treats every example on its own (no
        statistics over the batch in its ``forward``). The check feeds both
        different random batches shaped like ``example`` (one input), since
        models given the same batch agree even if their forward mixes them;
        where the two disagree, vmap is used from then on.
        """
        if self.folded is not None and not self._folded_checked:
            self._folded_checked = True
            generator = torch.Generator(self.device).manual_seed(0)  # leaves torch's RNG alone
            probe = torch.randn(
                len(self), 16, *example.shape, generator=generator, device=self.device
            ).to(example.dtype)
            with torch.no_grad(), self._eval():
                want = torch.vmap(self._call)(self.params, self.buffers, probe)
                got = self._call_folded(probe)
            if not torch.allclose(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max())):
                self.folded = None
        return self.folded is not None

    def _eval(self) -> AbstractContextManager[None]:
        """As the loop's predict: dropout off."""
        return eval_mode(self.base, *([self.folded] if self.folded is not None else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, C) for per-model inputs ``x`` of shape (K, B, ...)."""
        if self._use_folded(x[0, 0]):
            return self._call_folded(x)
        return torch.vmap(self._call)(self.params, self.buffers, x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Logits (K, N, C) of every model on the same inputs ``x`` (N, ...)."""
        with self._eval():
            if self._use_folded(x[0]):
                # The folded model takes K copies of each chunk: chunks of
                # batch_size / K rows keep its batch at batch_size examples.
                chunks = x.split(max(1, batch_size // len(self)))
                return torch.cat(
                    [self._call_folded(chunk.expand(len(self), *chunk.shape)) for chunk in chunks],
                    dim=1,
                )
            shared = torch.vmap(self._call, in_dims=(0, 0, None))
            return torch.cat(
                [shared(self.params, self.buffers, chunk) for chunk in x.split(batch_size)], dim=1
            )

    def model(self, k: int) -> nn.Module:
        """Model ``k`` as an ordinary module (a copy of its parameters)."""
        module = copy.deepcopy(self.base).to_empty(device=self.device)
        state = {name: value[k].detach().clone() for name, value in self.params.items()}
        state.update({name: value[k].clone() for name, value in self.buffers.items()})
        module.load_state_dict(state)
        return module

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device


def ensemble_threads(configured: int | None, models: int) -> int:
    """Torch threads for an ensemble of ``models``: ``configured``, or by default one
    fewer than the cores this process may use (at least one), at most one per model.

    One small model gains little from a second thread, but the ensemble's batched
    GEMMs split over its models (8 convnet1d models on MNIST-1D: 1.5x faster on
    two threads than on one on an idle machine, bench/scoring.py). Every core is
    not the default because a parallel region waits for its slowest thread: when
    another job holds a core, the thread sharing it stalls the rest. Measured on
    the 2-core machine with other jobs running (load 3-5; el2n, 4 convnet1d models,
    3 epochs of MNIST-1D's 4000 examples): 10.6, 13.0 and 21.0 s on two threads
    against 5.0, 4.1 and 7.0 s on one (issue 25 reported 12.1 s against 9.4 s). So
    one core is left free; set ``scoring.ensemble_threads`` to use every core of a
    machine you have to yourself.
    """
    if configured:
        return configured
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min((cores or 1) - 1, models))


def can_batch(model: nn.Module) -> bool:
    """vmap cannot update running statistics (BatchNorm) in place; such models train one by one."""
    return not any(True for _ in model.buffers())


def build_models(
    dataset: Dataset, model_cfg: ModelSpec, seeds: Sequence[int], device: torch.device
) -> list[nn.Module]:
    """One model per seed: a registered model or the user's (datapruning.user), each seeded."""
    from datapruning import user

    spec = user.per_seed(model_cfg)  # a user module: a re-initialised copy per seed
    models = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # as the training loop seeds its model
            models.append(user.build(spec, dataset).to(device))
    return models


def clip_per_model(params: Sequence[torch.Tensor], max_norm: float, *, stacked: bool) -> None:
    """``train.clip_grad_norm`` as the loop's step applies it, to each model on its own.

    ``stacked``: the parameters carry the K models on their leading dimension, and each
    model's gradients are rescaled by ``max_norm / (its total norm + 1e-6)`` when that is
    below 1, as ``torch.nn.utils.clip_grad_norm_`` rescales one model's.
    """
    if not stacked:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.detach().flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))


def train_ensemble(
    dataset: Dataset,
    model_cfg: ModelSpec,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    epochs: int,
    *,
    on_batch: BatchHook | None = None,
    progress: bool | None = None,
    desc: str = "ensemble",
    threads: int | None = None,
) -> Ensemble:
    """Train one model per seed, all at once, with the training loop's recipe.

    ``threads`` sets torch's intra-op threads for the run (None: leave them as they are).
    A model with buffers (BatchNorm) cannot be vmapped in training mode; it
    trains alone (one seed per call) as a plain module, through the same steps.
    """
    device = torch.device(train_cfg.device)
    seeds = list(seeds)
    x_train = train_rows(dataset, device)  # a streaming set: each batch read from the source
    y_train = torch.as_tensor(dataset.y_train, device=device)
    num_train = len(y_train)
    previous_threads = torch.get_num_threads()
    bar: Progress | None = None
    if threads:
        torch.set_num_threads(threads)
    try:
        models = build_models(dataset, model_cfg, seeds, device)
        plain = not can_batch(models[0])
        if plain and len(seeds) != 1:
            raise DataPruningError(
                f"a model with BatchNorm trains one seed at a time, not {len(seeds)}; "
                "set scoring.ensemble_size=1 or scoring.batched=false"
            )
        params, buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")
        ensemble = Ensemble(base, params, buffers, seeds)
        if plain:
            models[0].train()
            trained = list(models[0].parameters())

            def forward(x: torch.Tensor) -> torch.Tensor:
                return models[0](x[0]).unsqueeze(0)
        else:
            trained = list(params.values())
            forward = ensemble.forward
        optimizer = make_optimizer(trained, train_cfg)
        batch_size = train_cfg.batch_size
        plan = plan_steps(
            derive(train_cfg, epochs=epochs, steps=None),
            math.ceil(num_train / batch_size),
            raise_hint="scoring.epochs",
        )
        scheduler = make_scheduler(optimizer, plan)
        samplers = [SubsetSampler(np.arange(num_train), shuffle=True, seed=s) for s in seeds]
        # A bar on a terminal, a line per epoch elsewhere (datapruning._progress).
        bar = Progress(f"{desc} ({len(seeds)} models)", epochs, "epoch", progress, per_tenth=False)
        for epoch in range(epochs):
            loss_sum = torch.zeros((), device=device)  # on the device: no wait per batch
            for sampler in samplers:
                sampler.set_epoch(epoch)
            order = torch.as_tensor(
                np.stack([sampler.epoch_indices() for sampler in samplers]), device=device
            )
            for start in range(0, num_train, batch_size):
                index = order[:, start : start + batch_size]
                x, y = x_train[index], y_train[index]
                logits = forward(x)
                if on_batch is not None:
                    on_batch(logits.detach(), y, index)
                per_model = F.cross_entropy(
                    logits.flatten(0, 1), y.flatten(), reduction="none"
                ).view(len(seeds), -1)
                loss = per_model.mean(dim=1).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if train_cfg.clip_grad_norm is not None:
                    clip_per_model(trained, train_cfg.clip_grad_norm, stacked=not plain)
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * len(y[0])
            bar.update()
            if bar.mode == "lines":  # the models' mean training loss over the epoch
                bar.epoch_end(epoch + 1, epochs, float(loss_sum) / (num_train * len(seeds)))
    finally:
        torch.set_num_threads(previous_threads)
        if bar is not None:
            bar.close()
    if plain:
        params, buffers = stack_module_state(models)
        ensemble = Ensemble(base, params, buffers, seeds)
    for value in ensemble.params.values():
        value.requires_grad_(False)
    return ensemble
