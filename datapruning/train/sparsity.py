"""Gradual magnitude pruning: masks beside the parameters, exact zeros in the weights.

The schedule is Zhu & Gupta's (2017, "To prune, or not to prune") cubic ramp

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3,   t0 <= t <= t0 + n * dt,

with masks recomputed every ``dt`` optimizer steps from ``t0`` until the end
``t0 + n * dt``, where the target ``s_f`` is reached exactly (if ``end - start``
is not a multiple of ``every``, the last update falls on ``end`` itself).

Three scopes:

- ``global``: one magnitude threshold across all pruned layers, but each layer
  keeps at least ``min_density`` of its weights so no layer collapses; the
  number pruned is exact (ties broken by position), so the pruned layers
  together sit at exactly round(s_t * size).
- ``layer``: every pruned layer at round(s_t * its size).
- ``nm``: N:M (default 2:4) along the input dimension: each weight is viewed
  as (out, in * kernel...) and every run of ``m`` consecutive weights keeps its
  ``n`` largest. The mask is fixed once, at ``start`` (prune a trained dense
  model once, then fine-tune, as NVIDIA's ASP recipe does), so every targeted
  layer ends at exactly 1 - n/m with no group above ``n`` non-zeros.
  With ``mode: dynamic`` (:class:`DynamicNMPruner`) the weights stay dense and
  the mask is recomputed from them every step, trained through with SR-STE
  (Zhou et al. 2021); the rules below on growing masks and exact zeros after
  every step are the one-shot and GMP modes'.

Optional weight rewinding (Frankle et al. 2020, "Linear mode connectivity and
the lottery ticket hypothesis"): the whole model's state after ``rewind`` steps
is kept, and restored when the final masks are set (at ``end``; for N:M at
``start``); training then goes on under the fixed masks with a fresh optimizer
state and the LR schedule where it was.

Masks only grow (a pruned weight is never revived): at each update the pruned
weights rank below every surviving one. ``MagnitudePruner.step`` runs right
after ``optimizer.step()`` and updates the masks when scheduled. The loop's
optimizer is then a masked one (:mod:`datapruning.kernels.masked_optim`,
``train.schedule.make_optimizer(..., masks=...)``), which the pruner hands each
new set of masks: it keeps the pruned weights, and their optimizer state
(momentum, Adam moments), at +0 inside its own step (one fused pass per tensor
group on CUDA). With a plain torch optimizer (a loop of one's own),
``step(t, optimizer)`` fills the pruned weights and their state with +0 after
every step instead. Either way pruned weights are exactly zero after every
step whatever the momentum or weight decay, with the same values on CPU.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from datapruning.errors import DataPruningError
from datapruning.kernels.masked_optim import MaskedAdamW, MaskedSGD
from datapruning.kernels.masks import global_masks, nm_mask, smallest_mask
from datapruning.train.settings import DynamicNM, GradualMagnitude, Sparsity

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_weights(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, weight) of every conv/linear layer (and attention input projection), in module order."""
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, _PRUNABLE):
            yield f"{prefix}weight", module.weight
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            yield f"{prefix}in_proj_weight", module.in_proj_weight


def select_weights(model: nn.Module, cfg: Sparsity) -> dict[str, nn.Parameter]:
    """The weights ``cfg`` prunes: first/last layer dropped by default, then include/exclude."""
    candidates = list(prunable_weights(model))
    chosen = candidates if cfg.prune_first_last else candidates[1:-1]
    if cfg.include:
        chosen = [(n, p) for n, p in chosen if any(re.search(r, n) for r in cfg.include)]
    chosen = [(n, p) for n, p in chosen if not any(re.search(r, n) for r in cfg.exclude)]
    if not chosen:
        names = ", ".join(n for n, _ in candidates) or "(none)"
        raise DataPruningError(
            f"sparsity selects no layer; fix sparsity.include/exclude (prunable weights: {names}"
            f"{'' if cfg.prune_first_last else '; the first and last stay dense unless prune_first_last'})"
        )
    return dict(chosen)


def cubic_sparsity(step: int, initial: float, target: float, start: int, end: int) -> float:
    """Zhu & Gupta's sparsity at ``step``: ``initial`` until ``start``, ``target`` from ``end``."""
    if step < start:
        return initial
    if step >= end:
        return target
    progress = (step - start) / (end - start)
    return target + (initial - target) * (1 - progress) ** 3


@dataclass(frozen=True)
class Schedule:
    """When masks change, in optimizer steps (1 = after the first step)."""

    start: int
    end: int  # the final masks are set here
    every: int
    rewind: int | None = None  # the step whose weights are restored at ``end``

    @classmethod
    def resolve(
        cls, cfg: Sparsity, total_steps: int, *, end: int | float | None = None
    ) -> Schedule:
        """``cfg``'s schedule in steps of a ``total_steps`` run; ``end`` (a step or a
        fraction) in place of the config's (N:M: its start)."""

        def steps(value: int | float, what: str) -> int:
            resolved = round(value * total_steps) if isinstance(value, float) else value
            if resolved > total_steps:
                raise DataPruningError(
                    f"sparsity.{what} = {value} is past the run's last step {total_steps}; "
                    f"give a step <= {total_steps} or a fraction in [0, 1]"
                )
            return resolved

        # Only gradual magnitude updates its masks at intervals; N:M sets one at start.
        every = steps(cfg.every, "every") if isinstance(cfg, GradualMagnitude) else 1
        start, every = steps(cfg.start, "start"), max(1, every)
        # N:M sets its one mask at start: the end of its schedule is its start.
        if end is None:
            end = start if cfg.scope == "nm" else steps(cfg.end, "end")
        else:
            end = steps(end, "end")
        if end < start:
            raise DataPruningError(
                f"sparsity.end ({end} steps) comes before sparsity.start ({start} steps)"
            )
        rewind = getattr(cfg, "rewind", None)  # dynamic N:M does not rewind
        rewind = None if rewind is None else steps(rewind, "rewind")
        if rewind is not None and rewind > end:
            raise DataPruningError(
                f"sparsity.rewind ({rewind} steps) comes after the final masks at step {end}; "
                "rewind to an earlier step"
            )
        return cls(start, end, every, rewind)

    def updates_at(self, step: int) -> bool:
        if step < self.start or step > self.end:
            return False
        return (step - self.start) % self.every == 0 or step == self.end


class MagnitudePruner:
    """Masks for the selected weights of ``model`` and the schedule that grows them.

    Args:
        model: the model whose weights are pruned in place.
        cfg: the sparsity section of the training config.
        total_steps: optimizer steps in the whole run (resolves fractional start/end/every).

    Scope ``nm`` with ``mode: dynamic`` is :class:`DynamicNMPruner` instead.

    Raises:
        DataPruningError: the selection is empty, an N:M group size does not
            divide a layer's input width, the target cannot be met with the
            per-layer floor, or the schedule does not fit in ``total_steps``.
    """

    zeroes_pruned = True  # pruned weights (and their optimizer state) are +0 after every step

    def __init__(self, model: nn.Module, cfg: Sparsity, total_steps: int) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        self.schedule = Schedule.resolve(cfg, total_steps)
        self.weights = select_weights(model, cfg)
        self.masks: dict[str, Tensor] = {}
        self._pruned: dict[str, Tensor] = {}  # ~masks, kept to spare an inversion per step
        self.model = model
        self.sparsity = 0.0  # the scheduled sparsity the masks were last set to
        self.last_update: int | None = None
        # The model's state after `rewind` steps, held until the final masks are set.
        self.rewind_state: dict[str, Tensor] | None = None
        if cfg.scope == "nm":
            for name, weight in self.weights.items():
                width = weight[0].numel()
                if width % cfg.m:
                    raise DataPruningError(
                        f"N:M sparsity {cfg.n}:{cfg.m}: m = {cfg.m} does not divide the input "
                        f"width {width} of {name} {tuple(weight.shape)}; pick another m or "
                        "exclude the layer with sparsity.exclude"
                    )
        elif cfg.scope == "global":
            size = sum(w.numel() for w in self.weights.values())
            floor = sum(_floor_count(w.numel(), cfg.min_density) for w in self.weights.values())
            if round(cfg.target * size) > size - floor:
                raise DataPruningError(
                    f"sparsity.target {cfg.target} cannot be met while every layer keeps "
                    f"min_density {cfg.min_density}; lower one of them"
                )
        if self.schedule.updates_at(0) or self.schedule.rewind == 0:
            self.step(0)  # prune, or keep the weights to rewind to, at initialisation

    @property
    def final_sparsity(self) -> float:
        return self.cfg.target  # N:M: 1 - n/m

    def sparsity_at(self, step: int) -> float:
        """The scheduled sparsity after ``step`` optimizer steps."""
        if self.cfg.scope == "nm":
            return self.final_sparsity if step >= self.schedule.start else 0.0
        s = self.schedule
        return cubic_sparsity(step, self.cfg.initial, self.cfg.target, s.start, s.end)

    @torch.no_grad()
    def step(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Call after ``optimizer.step()`` with the number of optimizer steps taken so far.

        Updates the masks when the schedule says so. With a masked optimizer
        (:func:`is_masked`: the loop's when sparsity is on) new masks are handed
        to it (``set_masks`` zeroes the pruned weights and their state at once)
        and nothing else is done: its step keeps them zero. With a plain
        optimizer, or none, the pruned weights and, given ``optimizer``, their
        per-weight state are zeroed here after every step.
        """
        if step == self.schedule.rewind:
            self.rewind_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        updated = self.schedule.updates_at(step)
        if updated:
            self._update(step)
            if step == self.schedule.end and self.rewind_state is not None:
                self._rewind(optimizer)
        if is_masked(optimizer):
            if updated:
                optimizer.set_masks(self.optimizer_masks())  # type: ignore[union-attr]
            return
        self.apply(optimizer)

    def _rewind(self, optimizer: torch.optim.Optimizer | None) -> None:
        # Frankle et al. (2020) rewind to an early step, not to the initialisation;
        # the optimizer restarts (no stale momentum), the LR schedule goes on.
        self.model.load_state_dict(self.rewind_state)
        self.rewind_state = None
        if optimizer is not None:
            optimizer.state.clear()

    def optimizer_masks(self) -> dict[Tensor, Tensor]:
        """{weight: keep-mask} of the pruned weights, as the masked optimizers take them."""
        return {self.weights[name]: mask for name, mask in self.masks.items()}

    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero the pruned weights (and their optimizer state) under the current masks.

        A masked optimizer is handed the masks instead, which zeroes both.
        """
        if is_masked(optimizer):
            optimizer.set_masks(self.optimizer_masks())  # type: ignore[union-attr]
            return
        if self._pruned.keys() != self.masks.keys():  # masks replaced: invert them once
            self._pruned = {name: ~mask for name, mask in self.masks.items()}
        for name, pruned in self._pruned.items():
            weight = self.weights[name]
            # masked_fill, not a product: +0 exactly, even where a weight is inf or nan.
            weight.masked_fill_(pruned, 0)
            if optimizer is not None:
                for value in optimizer.state.get(weight, {}).values():
                    if isinstance(value, Tensor) and value.shape == weight.shape:
                        value.masked_fill_(pruned, 0)

    def _update(self, step: int) -> None:
        sparsity = self.sparsity_at(step)
        if self.cfg.scope == "nm":
            self.masks = {n: nm_mask(w, self.cfg.n, self.cfg.m) for n, w in self.weights.items()}
        elif self.cfg.scope == "layer":
            self.masks = {
                n: _smallest_mask(
                    self._scores(n), min(round(sparsity * w.numel()), w.numel() - 1)
                ).view_as(w)
                for n, w in self.weights.items()
            }
        else:
            self.masks = self._global_masks(sparsity)
        self._pruned = {}
        self.sparsity = sparsity
        self.last_update = step

    def _scores(self, name: str) -> Tensor:
        # Weights already pruned rank below all others, so masks never shrink.
        score = self.weights[name].detach().abs().flatten().float()
        mask = self.masks.get(name)
        return score if mask is None else torch.where(mask.flatten(), score, -1.0)

    def _global_masks(self, sparsity: float) -> dict[str, Tensor]:
        # Exact greedy: each layer offers its `cap` smallest weights (cap leaves
        # min_density standing); the k smallest offers overall are pruned (ties by
        # layer, then position), found by selection instead of sorting every layer.
        names = list(self.weights)
        caps = [
            w.numel() - _floor_count(w.numel(), self.cfg.min_density) for w in self.weights.values()
        ]
        size = sum(w.numel() for w in self.weights.values())
        keeps = global_masks([self._scores(n) for n in names], caps, round(sparsity * size))
        return {n: keep.view_as(self.weights[n]) for n, keep in zip(names, keeps, strict=True)}

    def state_dict(self) -> dict[str, Any]:
        """Masks and schedule position, for an exact resume."""
        return {
            "masks": {n: m.clone() for n, m in self.masks.items()},
            "rewind_state": self.rewind_state,
            "sparsity": self.sparsity,
            "last_update": self.last_update,
            "total_steps": self.total_steps,
            "config": self.cfg.model_dump(mode="json"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore masks, schedule position and rewind weights from ``state_dict()``.

        For a resume: construct the pruner on the model (with start 0 the
        constructor prunes at initialisation), load the model's and optimizer's
        checkpointed states, then this; the checkpoint's masks replace the
        constructor's and are applied to the weights.
        """
        if state.get("config") != self.cfg.model_dump(mode="json") or (
            state.get("total_steps") != self.total_steps
        ):
            raise DataPruningError(
                "the checkpoint's sparsity settings differ from this run's; resume with the "
                "same train.sparsity and step count, or start a fresh run directory"
            )
        if set(state["masks"]) - set(self.weights):
            raise DataPruningError("the checkpoint's sparsity masks name layers this model lacks")
        self.masks = {
            n: m.to(device=self.weights[n].device, dtype=torch.bool)
            for n, m in state["masks"].items()
        }
        self._pruned = {}
        self.rewind_state = state["rewind_state"]
        self.sparsity = state["sparsity"]
        self.last_update = state["last_update"]
        self.apply()

    def report(self) -> dict[str, Any]:
        """Achieved sparsity (fraction of exact zeros) per pruned layer and overall."""
        names = list(self.weights)
        return sparsity_report(
            {n: self.weights[n].detach() for n in names},
            names,
            scope=self.cfg.scope,
            target=self.final_sparsity,
        )


def sparsity_report(
    state_dict: dict[str, Tensor], names: list[str], **extra: Any
) -> dict[str, Any]:
    """Fraction of exact zeros in each named tensor and over all of them together."""
    layers = {}
    zeros = size = 0
    for name in names:
        tensor = state_dict[name]
        layer_zeros = int((tensor == 0).sum())
        layers[name] = {"size": tensor.numel(), "sparsity": layer_zeros / tensor.numel()}
        zeros += layer_zeros
        size += tensor.numel()
    return {**extra, "sparsity": zeros / size if size else 0.0, "layers": layers}


def export_sparse(model: nn.Module, pruner: Pruner | None) -> dict[str, Tensor]:
    """``model.state_dict()`` with the masks folded in: pruned weights are real zeros."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if pruner is not None:
        for name, mask in pruner.masks.items():
            state[name] = state[name].masked_fill(~mask, 0)
    return state


def nm_violations(weight: Tensor, n: int, m: int) -> int:
    """How many groups of ``m`` consecutive input weights hold more than ``n`` non-zeros."""
    rows = weight.detach().reshape(weight.shape[0], -1)
    if rows.shape[1] % m:
        raise DataPruningError(f"m = {m} does not divide the input width {rows.shape[1]}")
    nonzeros = (rows.reshape(rows.shape[0], -1, m) != 0).sum(dim=2)
    return int((nonzeros > n).sum())


def is_masked(optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether ``optimizer`` keeps pruned weights zero itself (MaskedSGD, MaskedAdamW)."""
    return isinstance(optimizer, MaskedSGD | MaskedAdamW)


def _floor_count(size: int, min_density: float) -> int:
    """Weights a layer keeps at least: min_density of it, and never fewer than one."""
    return max(1, math.ceil(min_density * size))


def _smallest_mask(scores: Tensor, count: int) -> Tensor:
    return smallest_mask(scores, count)


def current_nm_mask(weight: Tensor, n: int, m: int) -> Tensor:
    """The N:M keep-mask of ``weight`` as it is now: the one call dynamic N:M makes per step
    (:func:`datapruning.kernels.masks.nm_mask`: Triton on CUDA, a stable sort on CPU)."""
    return nm_mask(weight, n, m)


class _SparseRefinedSTE(torch.autograd.Function):
    """Forward W⊙mask (pruned weights scaled by ``pruned_scale``, 0 once the mask is hard);
    backward straight-through to every weight plus SR-STE's ``decay`` * (1 - mask) * W."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, weight: Tensor, mask: Tensor, pruned_scale: float, decay: float
    ) -> Tensor:
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        if pruned_scale == 0:
            return weight.masked_fill(~mask, 0)  # +0 exactly, as the one-shot masks give
        return torch.where(mask, weight, weight * pruned_scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        weight, mask = ctx.saved_tensors
        if ctx.decay:
            grad = grad + ctx.decay * weight.masked_fill(mask, 0)
        return grad, None, None, None


class DynamicNMPruner:
    """N:M sparsity trained from scratch (``scope: nm``, ``mode: dynamic``).

    SR-STE (Zhou et al. 2021, "Learning N:M fine-grained structured sparse
    neural networks from scratch"): the model keeps dense weights W; every
    forward from ``start`` on uses W⊙mask with the mask recomputed from the
    current W (so a pruned weight re-enters once it outgrows a kept one), the
    gradient reaches every weight unmasked (straight-through) and the
    sparse-refined term λ(1-mask)⊙W (``sr_ste_decay``, 2e-4 as in the paper)
    pulls the pruned ones toward zero. With ``progressive`` the pruned weights
    are scaled by β = 1 - (t - start) / (end - start) instead of cut, β reaching
    0 at ``end`` (the linear mask decay, MDGF, of Bambhaniya et al. 2024,
    "Progressive gradient flow for robust N:M sparsity training in transformers").

    The masked weights are swapped in by hooks on ``model`` for the duration of
    each forward (as ``torch.func.functional_call`` swaps parameters), so the
    loop, the optimizer and state_dict see the plain dense Parameters under
    their usual keys, and attention layers that read ``in_proj_weight`` or
    ``out_proj.weight`` directly see the masked ones too. A mask is recomputed
    only when its weight changed (its version counter moved), i.e. once per
    optimizer step. Nothing here zeroes weights after a step: sparsity is a
    property of the masked weights, which :meth:`report` and ``export_sparse``
    use (exactly n of every m, real zeros).

    ``kernel: semi_structured`` (2:4 on CUDA) runs the eligible ``nn.Linear``
    layers through :mod:`datapruning.kernels.semi_structured`, whose mask is
    the transposable tile mask; the others, and every layer on CPU or in fp32,
    keep the masked dense path (:attr:`kernel_decisions` says why per layer).
    """

    zeroes_pruned = False  # weights stay dense; only the one-shot/GMP pruner zeroes them

    def __init__(self, model: nn.Module, cfg: Sparsity, total_steps: int) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        self.model = model
        # End only matters to the progressive decay; without it the mask is hard from start.
        self.schedule = Schedule.resolve(
            cfg, total_steps, end=cfg.end if cfg.progressive else cfg.start
        )
        self.weights = select_weights(model, cfg)
        _check_nm_widths(self.weights, cfg)
        self._owners = {name: _owner(model, name) for name in self.weights}
        self.steps_done = 0
        # name -> ((storage, version) of the weight the mask was computed from, mask)
        self._masks: dict[str, tuple[tuple[int, int], Tensor]] = {}
        self._swapped: dict[str, nn.Parameter] = {}
        self.kernel_decisions: dict[str, dict[str, Any]] = {}
        self._kernel_layers: set[str] = set()
        self._hooks = [
            model.register_forward_pre_hook(self._mask_in),
            model.register_forward_hook(self._mask_out, always_call=True),
        ]
        if cfg.kernel == "semi_structured":
            self._swap_in_kernels(model)

    @property
    def final_sparsity(self) -> float:
        return 1 - self.cfg.n / self.cfg.m

    @property
    def sparsity(self) -> float:
        return self.final_sparsity if self.steps_done >= self.schedule.start else 0.0

    def pruned_scale(self, step: int | None = None) -> float:
        """The factor on pruned weights after ``step`` steps: 1 before start, 0 once hard."""
        step = self.steps_done if step is None else step
        start, end = self.schedule.start, self.schedule.end
        if step < start:
            return 1.0
        if not self.cfg.progressive or step >= end:
            return 0.0
        return 1 - (step - start) / (end - start)

    def mask(self, name: str) -> Tensor:
        """The keep-mask of weight ``name`` under its current values (n of every m)."""
        weight = self.weights[name]
        cached = self._masks.get(name)
        if cached is not None and cached[0] == _state_of(weight):
            return cached[1]
        decision = self.kernel_decisions.get(name, {})
        if decision.get("kernel") == "semi_structured":
            from datapruning.kernels.semi_structured import tile_mask

            dtype = getattr(torch, decision["dtype"])
            mask = tile_mask(weight.detach().to(dtype))
        else:
            mask = current_nm_mask(weight, self.cfg.n, self.cfg.m)
        self._masks[name] = (_state_of(weight), mask)
        return mask

    @property
    def masks(self) -> dict[str, Tensor]:
        """The masks of the current weights: what the forward uses and the export folds in."""
        return {name: self.mask(name) for name in self.weights}

    def _on_kernel(self, name: str) -> bool:
        return (
            name in self._kernel_layers
            and self.kernel_decisions.get(name, {}).get("kernel") == "semi_structured"
            and self._kernel_active()
        )

    def _kernel_active(self) -> bool:
        return self.steps_done >= self.schedule.start and self.pruned_scale() == 0

    def _decay(self) -> float:
        return self.cfg.sr_ste_decay if self.steps_done >= self.schedule.start else 0.0

    def _mask_in(self, module: nn.Module, args: Any) -> None:
        if self.steps_done < self.schedule.start or self._swapped:
            return
        scale, decay = self.pruned_scale(), self._decay()
        for name, (owner, attr) in self._owners.items():
            if self._on_kernel(name):
                continue  # the 2:4 kernel masks the dense weight itself
            weight = owner._parameters[attr]
            # Into _parameters directly: setattr refuses a non-Parameter there.
            owner._parameters[attr] = _SparseRefinedSTE.apply(weight, self.mask(name), scale, decay)
            self._swapped[name] = weight

    def _mask_out(self, module: nn.Module, args: Any, output: Any) -> None:
        for name, weight in self._swapped.items():
            owner, attr = self._owners[name]
            owner._parameters[attr] = weight
        self._swapped = {}

    def _swap_in_kernels(self, model: nn.Module) -> None:
        from datapruning.kernels import semi_structured as semi

        parents = {id(c): p for p in model.modules() for c in p.children()}
        device = semi.device_reason(next(iter(self.weights.values())).device)
        timed: dict[Any, tuple[float, float]] = {}
        for name in self.weights:
            owner, _ = self._owners[name]
            reason = semi.layer_reason(owner, parents.get(id(owner)))
            if reason is not None and self.cfg.include:
                raise DataPruningError(
                    f"sparsity.kernel semi_structured cannot take {name}: {reason}; drop it "
                    "from sparsity.include or use kernel dense"
                )
            if reason or device:
                self.kernel_decisions[name] = {"kernel": "dense", "reason": reason or device}
                continue
            semi.swap_in(
                owner,  # type: ignore[arg-type]
                semi.SemiStructuredState(
                    name=name,
                    decay=self._decay,
                    active=self._kernel_active,
                    on_mask=lambda mask, name=name: self._record_mask(name, mask),
                    decisions=self.kernel_decisions,
                    timed=timed,
                ),
            )
            self._kernel_layers.add(name)

    def _record_mask(self, name: str, mask: Tensor) -> None:
        self._masks[name] = (_state_of(self.weights[name]), mask)

    def close(self) -> None:
        """Detach from the model: hooks removed, swapped layers plain ``nn.Linear`` again."""
        from datapruning.kernels.semi_structured import swap_out

        for hook in self._hooks:
            hook.remove()
        for name in self._kernel_layers:
            swap_out(self._owners[name][0])
        self._kernel_layers = set()

    def step(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Call after ``optimizer.step()``: the next forward masks by the weights of ``step``."""
        self.steps_done = step

    def apply(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Nothing to zero: the weights stay dense and the forward masks them."""

    def state_dict(self) -> dict[str, Any]:
        """The step count (masks follow from the weights) and the per-layer kernel choices."""
        return {
            "mode": "dynamic",
            "steps_done": self.steps_done,
            "kernel_decisions": {k: dict(v) for k, v in self.kernel_decisions.items()},
            "total_steps": self.total_steps,
            "config": self.cfg.model_dump(mode="json"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()``, after the model's weights were loaded."""
        if (
            state.get("mode") != "dynamic"
            or state.get("config") != self.cfg.model_dump(mode="json")
            or state.get("total_steps") != self.total_steps
        ):
            raise DataPruningError(
                "the checkpoint's sparsity settings differ from this run's; resume with the "
                "same train.sparsity and step count, or start a fresh run directory"
            )
        self.steps_done = state["steps_done"]
        # The same kernel per layer as before the interruption (no re-timing).
        self.kernel_decisions.clear()
        self.kernel_decisions.update(state["kernel_decisions"])
        self._masks = {}

    def report(self) -> dict[str, Any]:
        """Sparsity of the masked weights (what the export holds) per layer and overall."""
        names = list(self.weights)
        masks = self.masks
        report = sparsity_report(
            {n: self.weights[n].detach().masked_fill(~masks[n], 0) for n in names},
            names,
            scope="nm",
            mode="dynamic",
            target=self.final_sparsity,
        )
        if self.cfg.kernel != "dense":
            report["kernels"] = {k: dict(v) for k, v in self.kernel_decisions.items()}
        return report


Pruner = MagnitudePruner | DynamicNMPruner


def _check_nm_widths(weights: dict[str, nn.Parameter], cfg: Sparsity) -> None:
    for name, weight in weights.items():
        width = weight[0].numel()
        if width % cfg.m:
            raise DataPruningError(
                f"N:M sparsity {cfg.n}:{cfg.m}: m = {cfg.m} does not divide the input "
                f"width {width} of {name} {tuple(weight.shape)}; pick another m or "
                "exclude the layer with sparsity.exclude"
            )


def _state_of(weight: Tensor) -> tuple[int, int]:
    """Changes whenever ``weight`` may have: an in-place update (optimizer step, load) moves
    its version counter, a ``.data`` swap (``model.to``) its storage."""
    return weight.data_ptr(), weight._version


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """(module, attribute) that holds the parameter ``name`` of ``model``."""
    path, _, attr = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attr


def build_pruner(model: nn.Module, cfg: Sparsity, total_steps: int) -> Pruner | None:
    """The pruner ``cfg`` asks for, or None when sparsity is off."""
    if not cfg.enabled:
        return None
    if isinstance(cfg, DynamicNM):
        return DynamicNMPruner(model, cfg, total_steps)
    return MagnitudePruner(model, cfg, total_steps)
