"""SGD and AdamW that keep pruned weights, and their state, exactly zero in the step itself.

Sparse training used to run torch's optimizer step and then ``masked_fill_`` the
pruned weights and each state tensor (MagnitudePruner.apply): on a GPU that is
one more read-modify-write pass over every pruned tensor per state buffer. Here
the mask is read inside the update: the gradient is masked (with ``where``, so
an inf or nan at a pruned position cannot leak), weight decay, the state update
and the weight update follow, and pruned positions of the weight and of every
state tensor are written as +0, in one pass per tensor.

The Triton path is a multi-tensor launch: the tensors of one dtype (and, for
AdamW, one step count) go to one kernel launch through a table of their
addresses and a table of (tensor, block start) per program, as torch's
``_foreach`` kernels and the Triton grouped-GEMM tutorial do, so a ResNet-18 step
is a handful of launches, not one per tensor. The address tables are cached by
the addresses they hold (:class:`_AddressTables`): a steady loop builds them
once, not once a step, and a new set is copied from pinned memory without
blocking, so no step waits on the device (tests/kernels/test_probe.py counts the
builds; tests/kernels/test_cuda_paths.py runs steady steps under
``torch.cuda.set_sync_debug_mode("error")``). Each launch runs under its
parameters' CUDA device. Each launch variant (dtype, masked, momentum, first
step, Nesterov) is probed once per process against the update in torch; a
variant that fails its probe or raises at launch goes to the reference, and
optimizer state (new momentum buffers and moments, AdamW's step counts) is
committed only after a launch ran, so the reference then finds the state it
expects. Arithmetic is in fp32 whatever the parameter dtype (one rounding to
bf16 per stored value). The torch
reference (CPU, or ``DATAPRUNING_KERNELS=torch``) is torch's own foreach
formulas, then ``masked_fill_`` of the weight and state: every op is elementwise,
so what a pruned position's gradient holds cannot reach a kept one, and the
fill restores +0; masking the gradient first would cost one more pass. Unmasked
parameters follow torch.optim.SGD / AdamW exactly (same ops in the same order).

State and state_dict use torch's names and layout (``momentum_buffer``;
``step``, a float32 CPU tensor, ``exp_avg``, ``exp_avg_sq``), so checkpoints
move between these classes and torch's. Masks are not optimizer state: the
pruner owns them and calls :meth:`set_masks` whenever they change.

Measured (bench/results/kernel_optim_cpu.json, CPU time, one thread, 90% masks):
on CPU the reference is today's pipeline op for op, so it gains nothing there
(ResNet-18 SGD 119 ms vs 87 ms foreach-then-fill and 64 ms fused-then-fill,
within the shared machine's noise of the same work); the masked_fill passes
are most of it (torch's unmasked fused SGD step: 9 ms). The fused Triton path
is for CUDA and its figures (goal: 1.5x the better torch option, masked within
10% of unmasked) remain to be measured on a GPU.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from datapruning.errors import DataPruningError
from datapruning.kernels._dispatch import (
    HAVE_TRITON,
    PROBED,
    launch_failed,
    mismatch,
    record,
    reference_reason,
    take_kernel,
)

_BLOCK = 1024

if HAVE_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _pointer(table, row, n_tensors, tensor, DTYPE: tl.constexpr):
        return tl.load(table + row * n_tensors + tensor).to(tl.pointer_type(DTYPE), bitcast=True)

    @triton.jit
    def _sgd_kernel(
        addresses,  # int64 (4, T): param, grad, momentum buffer, mask
        numels,
        block_tensor,
        block_start,
        n_tensors,
        lr,
        momentum,
        dampening,
        weight_decay,
        DTYPE: tl.constexpr,
        MASKED: tl.constexpr,
        MOMENTUM: tl.constexpr,
        FIRST: tl.constexpr,  # the momentum buffer starts as the gradient
        NESTEROV: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        t = tl.load(block_tensor + pid)
        offs = tl.load(block_start + pid) + tl.arange(0, BLOCK).to(tl.int64)
        inside = offs < tl.load(numels + t)
        p_ptr = _pointer(addresses, 0, n_tensors, t, DTYPE)
        g_ptr = _pointer(addresses, 1, n_tensors, t, DTYPE)
        p = tl.load(p_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        if MASKED:
            m_ptr = _pointer(addresses, 3, n_tensors, t, tl.int8)
            keep = tl.load(m_ptr + offs, mask=inside, other=0) != 0
            g = tl.where(keep, g, 0.0)
        d = g + weight_decay * p
        if MOMENTUM:
            b_ptr = _pointer(addresses, 2, n_tensors, t, DTYPE)
            if FIRST:
                buf = d
            else:
                buf = tl.load(b_ptr + offs, mask=inside, other=0.0).to(tl.float32)
                buf = buf * momentum + (1.0 - dampening) * d
            if NESTEROV:  # noqa: SIM108 (a constexpr branch, resolved at compile time)
                d = d + momentum * buf
            else:
                d = buf
            if MASKED:
                buf = tl.where(keep, buf, 0.0)
            tl.store(b_ptr + offs, buf.to(DTYPE), mask=inside)
        p = p - lr * d
        if MASKED:
            p = tl.where(keep, p, 0.0)
        tl.store(p_ptr + offs, p.to(DTYPE), mask=inside)

    @triton.jit
    def _adamw_kernel(
        addresses,  # int64 (5, T): param, grad, exp_avg, exp_avg_sq, mask
        numels,
        block_tensor,
        block_start,
        n_tensors,
        decay_factor,  # 1 - lr * weight_decay
        beta1,
        beta2,
        eps,
        step_size,  # lr / (1 - beta1 ** step)
        bias_correction2_sqrt,
        DTYPE: tl.constexpr,
        MASKED: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        t = tl.load(block_tensor + pid)
        offs = tl.load(block_start + pid) + tl.arange(0, BLOCK).to(tl.int64)
        inside = offs < tl.load(numels + t)
        p_ptr = _pointer(addresses, 0, n_tensors, t, DTYPE)
        g_ptr = _pointer(addresses, 1, n_tensors, t, DTYPE)
        m_ptr = _pointer(addresses, 2, n_tensors, t, DTYPE)
        v_ptr = _pointer(addresses, 3, n_tensors, t, DTYPE)
        p = tl.load(p_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        if MASKED:
            k_ptr = _pointer(addresses, 4, n_tensors, t, tl.int8)
            keep = tl.load(k_ptr + offs, mask=inside, other=0) != 0
            g = tl.where(keep, g, 0.0)
        p = p * decay_factor
        m = m + (1.0 - beta1) * (g - m)  # torch's lerp for weights < 0.5
        v = v * beta2 + (1.0 - beta2) * (g * g)
        denom = tl.sqrt_rn(v) / bias_correction2_sqrt + eps
        p = p - step_size * tl.div_rn(m, denom)
        if MASKED:
            p = tl.where(keep, p, 0.0)
            m = tl.where(keep, m, 0.0)
            v = tl.where(keep, v, 0.0)
        tl.store(p_ptr + offs, p.to(DTYPE), mask=inside)
        tl.store(m_ptr + offs, m.to(DTYPE), mask=inside)
        tl.store(v_ptr + offs, v.to(DTYPE), mask=inside)

    _TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


class _BlockTables:
    """Per-program (tensor index, block start) tables, cached by the tensors' sizes."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], tuple[Tensor, Tensor, Tensor]] = {}

    def get(self, numels: tuple[int, ...], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        key = (numels, device)
        if key not in self._cache:
            blocks = [math.ceil(n / _BLOCK) for n in numels]
            tensor = torch.repeat_interleave(torch.arange(len(numels)), torch.tensor(blocks))
            first = torch.tensor([0, *blocks[:-1]]).cumsum(0)
            start = (torch.arange(sum(blocks)) - first[tensor]) * _BLOCK
            self._cache[key] = (
                torch.tensor(numels, dtype=torch.int64, device=device),
                tensor.to(device=device, dtype=torch.int32),
                start.to(device=device, dtype=torch.int64),
            )
        return self._cache[key]


class _AddressTables:
    """Device tables of the tensors' addresses, cached by the addresses themselves.

    Building a table is a host-to-device copy; made every step from pageable
    memory it would wait for the device each step. Keyed by the addresses it
    holds, a cached table is right by construction, and a steady training loop
    (parameters, state and masks fixed; gradients reused by ``zero_grad`` or
    re-allocated at the same address by the caching allocator) builds it once.
    A new address set (a new gradient tensor elsewhere) is copied from pinned
    memory without blocking, so it does not synchronise either.
    """

    SIZE = 8  # address sets kept per optimizer (gradients may alternate between a few)

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[Any, ...], Tensor] = OrderedDict()
        self.builds = 0  # how many tables were built and copied (tests count them)

    def get(self, roles: list[list[Tensor]], device: torch.device) -> Tensor:
        rows = [[t.data_ptr() for t in role] for role in roles]
        key = (str(device), len(rows), *(a for row in rows for a in row))
        table = self._cache.get(key)
        if table is None:
            self.builds += 1
            if device.type == "cuda":
                host = torch.tensor(rows, dtype=torch.int64, pin_memory=True)
                table = host.to(device, non_blocking=True)
            else:
                table = torch.tensor(rows, dtype=torch.int64)
            self._cache[key] = table
            if len(self._cache) > self.SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return table


def _device_guard(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Launch on ``device`` (Triton launches on the current CUDA device otherwise)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _launch(
    kernel: Any,
    tables: _BlockTables,
    addresses: _AddressTables,
    roles: list[list[Tensor]],
    *scalars: Any,
    **meta: Any,
) -> None:
    """One launch of ``kernel`` over the tensors of ``roles`` (rows: param, grad, state..., mask)."""
    params = roles[0]
    device = params[0].device
    with _device_guard(device):
        table = addresses.get(roles, device)
        numels, block_tensor, block_start = tables.get(tuple(p.numel() for p in params), device)
        kernel[(block_tensor.numel(),)](
            table,
            numels,
            block_tensor,
            block_start,
            len(params),
            *scalars,
            DTYPE=_TL_DTYPES[params[0].dtype],
            BLOCK=_BLOCK,
            **meta,
        )


# The probe's tensors: two, so the table has two columns; the first spans two blocks
# and ends in a partial one.
_PROBE_SIZES = (_BLOCK + 5, 3)


def _probe_tensors(
    device: str, dtype: torch.dtype, count: int
) -> tuple[list[list[Tensor]], list[Tensor]]:
    """``count`` random roles of the probe's sizes, and random keep-masks."""
    gen = torch.Generator().manual_seed(0)
    roles = [
        [torch.randn(n, generator=gen).to(device, dtype) for n in _PROBE_SIZES]
        for _ in range(count)
    ]
    roles[-1] = [v.abs() for v in roles[-1]]  # a second moment must be >= 0
    keep = [(torch.rand(n, generator=gen) < 0.5).to(device) for n in _PROBE_SIZES]
    return roles, keep


def _probe_sgd(variant: tuple[Any, ...]) -> str | None:
    """Launch one SGD variant on the probe's tensors and compare with the update in torch."""
    device, dtype, masked, with_momentum, first, nesterov = variant
    lr, wd = 0.1, 0.01
    momentum = 0.9 if with_momentum else 0.0
    dampening = 0.0 if nesterov else 0.1
    (params, grads, bufs), keep = _probe_tensors(device, dtype, 3)
    roles = [[t.clone() for t in params], grads, [b.clone() for b in bufs]]
    if masked:
        roles.append([k.view(torch.int8) for k in keep])
    _launch(
        _sgd_kernel,
        _BlockTables(),
        _AddressTables(),
        roles,
        lr,
        momentum,
        dampening,
        wd,
        MASKED=masked,
        MOMENTUM=with_momentum,
        FIRST=first,
        NESTEROV=nesterov,
    )
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for i in range(len(_PROBE_SIZES)):
        p, g = params[i].float(), grads[i].float()
        if masked:
            g = torch.where(keep[i], g, 0.0)
        d = g + wd * p
        if with_momentum:
            buf = d if first else bufs[i].float() * momentum + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
            if masked:
                buf = torch.where(keep[i], buf, 0.0)
            if bad := mismatch("momentum buffer", roles[2][i], buf.to(dtype), tol, tol):
                return bad
        p = p - lr * d
        if masked:
            p = torch.where(keep[i], p, 0.0)
        if bad := mismatch("weight", roles[0][i], p.to(dtype), tol, tol):
            return bad
    return None


def _probe_adamw(variant: tuple[Any, ...]) -> str | None:
    """Launch one AdamW variant on the probe's tensors and compare with the update in torch."""
    device, dtype, masked = variant
    lr, wd, beta1, beta2, eps, step = 1e-2, 0.05, 0.9, 0.999, 1e-8, 3
    (params, grads, exp_avgs, exp_avg_sqs), keep = _probe_tensors(device, dtype, 4)
    roles = [
        [t.clone() for t in params],
        grads,
        [t.clone() for t in exp_avgs],
        [t.clone() for t in exp_avg_sqs],
    ]
    if masked:
        roles.append([k.view(torch.int8) for k in keep])
    bias2 = (1 - beta2**step) ** 0.5
    _launch(
        _adamw_kernel,
        _BlockTables(),
        _AddressTables(),
        roles,
        1 - lr * wd,
        beta1,
        beta2,
        eps,
        lr / (1 - beta1**step),
        bias2,
        MASKED=masked,
    )
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for i in range(len(_PROBE_SIZES)):
        p, g = params[i].float(), grads[i].float()
        m, v = exp_avgs[i].float(), exp_avg_sqs[i].float()
        if masked:
            g = torch.where(keep[i], g, 0.0)
        p = p * (1 - lr * wd)
        m = m + (1 - beta1) * (g - m)
        v = v * beta2 + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**step) * m / (v.sqrt() / bias2 + eps)
        if masked:
            p, m, v = (torch.where(keep[i], t, 0.0) for t in (p, m, v))
        for name, got, want in (("weight", 0, p), ("exp_avg", 2, m), ("exp_avg_sq", 3, v)):
            if bad := mismatch(name, roles[got][i], want.to(dtype), tol, tol):
                return bad
    return None


def _same_layout(tensors: Iterable[Tensor]) -> bool:
    """Whether the tensors are dense with one stride pattern (an elementwise kernel's view)."""
    tensors = list(tensors)
    first = tensors[0]
    dense = first.is_contiguous() or (
        first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last)
    )
    return dense and all(t.stride() == first.stride() and t.shape == first.shape for t in tensors)


class _MaskedOptimizer(torch.optim.Optimizer):
    """Masks beside torch's param groups: validation, the +0 rule, layout for the kernel."""

    _state_keys: tuple[str, ...] = ()

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        masks: Mapping[nn.Parameter, Tensor] | None,
    ) -> None:
        super().__init__(params, defaults)
        self.masks: dict[Tensor, Tensor] = {}
        self._pruned: dict[Tensor, Tensor] = {}
        self._tables = _BlockTables()
        self._addresses = _AddressTables()
        self.set_masks(masks)

    def _where(self, param: Tensor) -> str:
        for g, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if p is param:
                    if "param_names" in group:  # built from model.named_parameters()
                        return f"{group['param_names'][i]} {tuple(p.shape)}"
                    return f"param_groups[{g}]['params'][{i}] {tuple(p.shape)}"
        return f"a tensor {tuple(param.shape)} that is not a parameter of this optimizer"

    @torch.no_grad()
    def set_masks(self, masks: Mapping[nn.Parameter, Tensor] | None) -> None:
        """Replace the masks (True = keep) and zero the pruned weights and their state now.

        Raises:
            DataPruningError: a mask is for a tensor this optimizer does not
                update, or its shape, dtype or device differs from its parameter's.
        """
        known = {id(p) for group in self.param_groups for p in group["params"]}
        checked: dict[Tensor, Tensor] = {}
        for param, mask in (masks or {}).items():
            if id(param) not in known:
                raise DataPruningError(
                    f"a mask is given for {self._where(param)}; pass masks only for the "
                    "parameters given to the optimizer"
                )
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                dtype = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
                raise DataPruningError(
                    f"the mask of {self._where(param)} is {dtype}, not torch.bool; "
                    "pass a boolean mask (True = keep)"
                )
            if mask.shape != param.shape or mask.device != param.device:
                raise DataPruningError(
                    f"the mask of {self._where(param)} has shape {tuple(mask.shape)} on "
                    f"{mask.device}; it must match its parameter's shape on {param.device}"
                )
            if mask.stride() != param.stride():  # the kernel reads both at one offset
                mask = torch.empty_like(param, dtype=torch.bool).copy_(mask)
            checked[param] = mask
        self.masks = checked
        self._pruned = {p: ~m for p, m in checked.items()}
        for param in checked:
            self._zero_pruned(param)

    def _zero_pruned(self, param: Tensor) -> None:
        pruned = self._pruned[param]
        param.masked_fill_(pruned, 0)  # masked_fill: +0 even where the weight is inf or nan
        for key in self._state_keys:
            value = self.state.get(param, {}).get(key)
            if isinstance(value, Tensor) and value.shape == param.shape:
                value.masked_fill_(pruned, 0)

    def _params_with_grad(self, group: dict[str, Any]) -> list[Tensor]:
        params = []
        for p in group["params"]:
            if p.grad is None:
                if p in self._pruned:  # no update, but the +0 rule still holds
                    self._zero_pruned(p)
                continue
            if p.grad.is_sparse:
                raise DataPruningError(
                    f"{self._where(p)} has a sparse gradient; masked optimizers take dense ones"
                )
            params.append(p)
        return params

    def _kernel_groups(
        self,
        params: list[Tensor],
        extra: Callable[[Tensor], Any],
        state_of: Callable[[Tensor], list[Tensor]],
    ) -> tuple[dict[tuple[Any, ...], list[Tensor]], list[Tensor]]:
        """Params for the Triton launches, keyed by (dtype, masked, extra), and the rest."""
        launches: dict[tuple[Any, ...], list[Tensor]] = {}
        rest = []
        for p in params:
            roles = [p, p.grad, *state_of(p)]
            if p in self.masks:
                roles.append(self.masks[p])
            if p.dtype in _TL_DTYPES and _same_layout(roles):
                launches.setdefault((p.dtype, p in self.masks, extra(p)), []).append(p)
            else:
                rest.append(p)
        return launches, rest

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                params = self._params_with_grad(group)
                if not params:
                    continue
                reason = reference_reason(tuple(params))
                if reason is None:
                    self._triton_step(group, params)
                else:
                    record(self._kernel, "torch", reason)
                    self._reference_step(group, params)
        return loss

    _kernel = ""  # the name paths_taken() gives this optimizer's kernel

    def _try_launch(
        self,
        variant: tuple[Any, ...],
        tensors: list[Tensor],
        probe: Callable[[tuple[Any, ...]], str | None],
        launch: Callable[[], None],
    ) -> bool:
        """Probe (once per variant), launch; False (the reference's turn) on any failure."""
        if not take_kernel(self._kernel, lambda: variant, tuple(tensors), probe):
            return False
        try:
            launch()
        except Exception as exc:  # never break a run: these tensors take the reference
            launch_failed(self._kernel, variant, exc)
            return False
        record(self._kernel, "triton", PROBED)
        return True

    def _layout_fallback(self, rest: list[Tensor]) -> None:
        if rest:
            record(
                self._kernel, "torch", "tensors not dense in one layout, or an unsupported dtype"
            )

    def _triton_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        raise NotImplementedError

    def _reference_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        raise NotImplementedError


class MaskedSGD(_MaskedOptimizer):
    """torch.optim.SGD (momentum, dampening, Nesterov, weight decay) with masks.

    Args:
        params: parameters or param groups, as for torch.optim.SGD.
        lr, momentum, dampening, weight_decay, nesterov: torch.optim.SGD's.
        masks: boolean keep-mask per parameter (True = keep); None = no masks.

    Raises:
        DataPruningError: a bad hyper-parameter or mask.
    """

    _state_keys = ("momentum_buffer",)
    _kernel = "masked_sgd"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        masks: Mapping[nn.Parameter, Tensor] | None = None,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise DataPruningError(
                f"MaskedSGD: lr {lr}, momentum {momentum} and weight_decay {weight_decay} "
                "must be >= 0"
            )
        if nesterov and (momentum <= 0 or dampening != 0):
            raise DataPruningError("MaskedSGD: Nesterov needs momentum > 0 and dampening 0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults, masks)

    def _triton_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        momentum = group["momentum"]
        # New buffers join the state only after their launch ran: a failed launch
        # leaves the state as the reference step expects it.
        fresh: dict[Tensor, Tensor] = {}
        if momentum:
            for p in params:
                if self.state[p].get("momentum_buffer") is None:
                    fresh[p] = torch.empty_like(p)

        def buffer(p: Tensor) -> Tensor:
            return fresh[p] if p in fresh else self.state[p]["momentum_buffer"]

        launches, rest = self._kernel_groups(
            params, lambda p: p in fresh, lambda p: [buffer(p)] if momentum else []
        )
        self._layout_fallback(rest)
        for (dtype, masked, is_first), tensors in launches.items():
            roles = [tensors, [p.grad for p in tensors]]
            roles.append([buffer(p) for p in tensors] if momentum else tensors)
            if masked:
                roles.append([self.masks[p] for p in tensors])
            variant = (
                str(tensors[0].device),
                dtype,
                masked,
                momentum != 0,
                is_first,
                group["nesterov"],
            )

            def launch(
                roles: list[list[Tensor]] = roles, is_first: bool = is_first, masked: bool = masked
            ) -> None:
                _launch(
                    _sgd_kernel,
                    self._tables,
                    self._addresses,
                    roles,
                    group["lr"],
                    momentum,
                    group["dampening"],
                    group["weight_decay"],
                    MASKED=masked,
                    MOMENTUM=momentum != 0,
                    FIRST=is_first,
                    NESTEROV=group["nesterov"],
                )

            if self._try_launch(variant, tensors, _probe_sgd, launch):
                for p in tensors:
                    if p in fresh:
                        self.state[p]["momentum_buffer"] = fresh[p]
            else:
                rest.extend(tensors)
        if rest:
            self._reference_step(group, rest)

    def _reference_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        grads = [p.grad for p in params]
        if wd:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if momentum:
            bufs = []
            for p, g in zip(params, grads, strict=True):
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = torch.clone(g).detach()
                    self.state[p]["momentum_buffer"] = buf
                else:
                    buf.mul_(momentum).add_(g, alpha=1 - group["dampening"])
                bufs.append(buf)
            nesterov = group["nesterov"]
            grads = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
        torch._foreach_add_(params, grads, alpha=-lr)
        for p in params:
            if p in self._pruned:
                self._zero_pruned(p)


class MaskedAdamW(_MaskedOptimizer):
    """torch.optim.AdamW (decoupled weight decay, no amsgrad) with masks.

    Args:
        params: parameters or param groups, as for torch.optim.AdamW.
        lr, betas, eps, weight_decay: torch.optim.AdamW's.
        amsgrad: must be False (not implemented).
        masks: boolean keep-mask per parameter (True = keep); None = no masks.

    Raises:
        DataPruningError: a bad hyper-parameter or mask, or amsgrad=True.
    """

    _state_keys = ("exp_avg", "exp_avg_sq")
    _kernel = "masked_adamw"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        masks: Mapping[nn.Parameter, Tensor] | None = None,
    ) -> None:
        if amsgrad:
            raise DataPruningError("MaskedAdamW has no amsgrad; use amsgrad=False")
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise DataPruningError(
                f"MaskedAdamW: lr {lr}, eps {eps}, weight_decay {weight_decay} must be >= 0 "
                f"and betas {betas} in [0, 1)"
            )
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": False,
        }
        super().__init__(params, defaults, masks)

    def _init_state(self, params: list[Tensor]) -> list[Tensor]:
        steps = []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            steps.append(state["step"])
        return steps

    def _triton_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        # The state (new moments, the step count) changes only after a launch ran.
        fresh: dict[Tensor, tuple[Tensor, Tensor]] = {}
        for p in params:
            if not self.state[p]:
                zeros = torch.zeros_like(p, memory_format=torch.preserve_format)
                fresh[p] = (zeros, torch.zeros_like(zeros))

        def moments(p: Tensor) -> list[Tensor]:
            if p in fresh:
                return list(fresh[p])
            return [self.state[p]["exp_avg"], self.state[p]["exp_avg_sq"]]

        def next_step(p: Tensor) -> float:
            return 1.0 if p in fresh else float(self.state[p]["step"]) + 1

        launches, rest = self._kernel_groups(params, next_step, moments)
        self._layout_fallback(rest)
        for (dtype, masked, step), tensors in launches.items():
            exp_avgs, exp_avg_sqs = zip(*(moments(p) for p in tensors), strict=True)
            roles = [tensors, [p.grad for p in tensors], list(exp_avgs), list(exp_avg_sqs)]
            if masked:
                roles.append([self.masks[p] for p in tensors])
            variant = (str(tensors[0].device), dtype, masked)

            def launch(
                roles: list[list[Tensor]] = roles, step: float = step, masked: bool = masked
            ) -> None:
                _launch(
                    _adamw_kernel,
                    self._tables,
                    self._addresses,
                    roles,
                    1 - lr * group["weight_decay"],
                    beta1,
                    beta2,
                    group["eps"],
                    lr / (1 - beta1**step),
                    (1 - beta2**step) ** 0.5,
                    MASKED=masked,
                )

            if not self._try_launch(variant, tensors, _probe_adamw, launch):
                rest.extend(tensors)
                continue
            for p in tensors:
                state = self.state[p]
                if p in fresh:
                    state["step"] = torch.tensor(1.0, dtype=torch.float32)
                    state["exp_avg"], state["exp_avg_sq"] = fresh[p]
                else:
                    state["step"] += 1
        if rest:
            self._reference_step(group, rest)

    def _reference_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        steps = self._init_state(params)
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        grads = [p.grad for p in params]
        # torch's _multi_tensor_adamw (not capturable), op for op
        torch._foreach_add_(steps, 1)
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        counts = [s.item() for s in steps]
        step_sizes = [-(lr / (1 - beta1**c)) for c in counts]
        bias_correction2_sqrt = [(1 - beta2**c) ** 0.5 for c in counts]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)
        for p in params:
            if p in self._pruned:
                self._zero_pruned(p)
