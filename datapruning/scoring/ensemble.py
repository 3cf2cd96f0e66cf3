"""Train K scoring models at once: one vmap over stacked parameters.

Scoring models are small, so training them one after another is dominated by
per-step Python and dispatch overhead. Here the K models' parameters are
stacked (``torch.func.stack_module_state``) and one ``vmap`` of
``functional_call`` runs all K forward/backward passes per step, each model on
its own batch. The recipe is the training loop's (:mod:`datapruning.train.loop`):
model ``k`` is initialised under ``torch.manual_seed(seed_k)``, sees the batches
of ``SubsetSampler(indices, shuffle=True, seed=seed_k)`` in the same order, and
is optimised by SGD with (Nesterov) momentum, weight decay and a per-step LR
(optional linear warm-up, then cosine to zero). SGD's update is elementwise, so one optimizer over the stacked tensors
updates each model exactly as its own optimizer would; the summed loss gives
each model its own gradient. Results match sequential training up to the
rounding of the batched kernels, which training amplifies (EL2N differs by
under 0.01 after 10 epochs on MNIST-1D).

On a CPU, plain Conv1d layers run through :mod:`datapruning.scoring.stacked_conv`
(three batched GEMMs per layer) instead of the grouped convolution vmap would
make of them, which is what makes the ensemble pay there.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state
from tqdm.auto import tqdm

from datapruning.config import ModelConfig, TrainConfig
from datapruning.data.samplers import SubsetSampler
from datapruning.data.sources import Dataset
from datapruning.errors import DataPruningError
from datapruning.scoring.stacked_conv import with_stacked_convs
from datapruning.train.loop import plan_steps

# Called once per step before the update: logits (K, B, C), labels (K, B), indices (K, B).
BatchHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass
class Ensemble:
    """K models of one architecture as stacked parameters (leading dim K)."""

    base: nn.Module  # on the meta device: the architecture only
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    seeds: list[int]
    # ``base`` with its Conv1d layers run as batched GEMMs under vmap (stacked_conv.py);
    # only forward and predict use it: GraNd's per-example grad needs the plain base.
    # CPU only: that is where oneDNN's grouped convolution was measured to lose;
    # on CUDA vmap's grouped convolution (cuDNN) stays.
    stacked: nn.Module = field(init=False, repr=False)

    def __post_init__(self) -> None:
        on_cpu = self.device.type == "cpu"
        self.stacked = with_stacked_convs(self.base) if on_cpu else self.base

    def __len__(self) -> int:
        return len(self.seeds)

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.stacked, (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, C) for per-model inputs ``x`` of shape (K, B, ...)."""
        return torch.vmap(self._call)(self.params, self.buffers, x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Logits (K, N, C) of every model on the same inputs ``x`` (N, ...)."""
        shared = torch.vmap(self._call, in_dims=(0, 0, None))
        was_training = self.stacked.training
        self.stacked.eval()  # as the loop's predict: dropout off, batch norm on running stats
        try:
            return torch.cat(
                [shared(self.params, self.buffers, chunk) for chunk in x.split(batch_size)], dim=1
            )
        finally:
            self.stacked.train(was_training)

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


def can_batch(model: nn.Module) -> bool:
    """vmap cannot update running statistics (BatchNorm) in place; such models train one by one."""
    return not any(True for _ in model.buffers())


def build_models(
    dataset: Dataset, model_cfg: ModelConfig, seeds: Sequence[int], device: torch.device
) -> list[nn.Module]:
    from models import build_model

    name = model_cfg.name or dataset.default_model
    models = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # as the training loop seeds its model
            models.append(
                build_model(name, dataset.input_shape, dataset.num_classes, **model_cfg.params).to(
                    device
                )
            )
    return models


def train_ensemble(
    dataset: Dataset,
    model_cfg: ModelConfig,
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
    x_train = torch.as_tensor(dataset.x_train, device=device)
    y_train = torch.as_tensor(dataset.y_train, device=device)
    num_train = len(y_train)
    previous_threads = torch.get_num_threads()
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
        optimizer = torch.optim.SGD(
            trained,
            lr=train_cfg.lr,
            momentum=train_cfg.momentum,
            nesterov=train_cfg.nesterov and train_cfg.momentum > 0,
            weight_decay=train_cfg.weight_decay,
        )
        batch_size = train_cfg.batch_size
        plan = plan_steps(
            train_cfg.model_copy(update={"epochs": epochs, "steps": None}),
            math.ceil(num_train / batch_size),
            raise_hint="scoring.epochs",
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, plan.lr_factor)
        samplers = [SubsetSampler(np.arange(num_train), shuffle=True, seed=s) for s in seeds]
        bar = tqdm(
            range(epochs),
            desc=f"{desc} ({len(seeds)} models)",
            unit="epoch",
            disable=None if progress is None else not progress,
            leave=False,
        )
        for epoch in bar:
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
                optimizer.step()
                scheduler.step()
    finally:
        torch.set_num_threads(previous_threads)
    if plain:
        params, buffers = stack_module_state(models)
        ensemble = Ensemble(base, params, buffers, seeds)
    for value in ensemble.params.values():
        value.requires_grad_(False)
    return ensemble
