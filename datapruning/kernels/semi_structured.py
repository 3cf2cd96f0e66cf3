"""2:4 semi-structured sparse training of ``nn.Linear`` layers on CUDA (sm80+, bf16/fp16).

Ampere and later GPUs multiply a matrix with two non-zeros in every four
consecutive values (packed values + 2-bit indices) on their sparse tensor cores
at up to twice the dense rate. PyTorch's recipe for *training* through them
("Accelerating neural network training with semi-structured (2:4) sparsity",
PyTorch blog 2024; the removed ``torchao.sparsity.training``, which this module
re-implements on torch's own ops and does not import) re-sparsifies the dense
weight every step:

- ``torch._sparse_semi_structured_tile`` prunes W in 4x4 tiles so that W *and*
  Wᵀ are both 2:4 (a transposable mask) and packs both for cuSPARSELt in one
  kernel;
- forward ``y = x Wᵀ`` and input gradient ``dx = dy W`` run as sparse @ dense
  through ``torch._cslt_sparse_mm`` (the packed W, then the packed Wᵀ);
- the weight gradient ``dW = dyᵀ x`` stays dense and reaches every weight
  (straight-through), so pruned weights can grow back, as SR-STE needs; an
  optional ``decay`` adds SR-STE's λ(1-mask)⊙W.

The mask is the tile's, not the row-wise top-2 of :func:`nm_mask`: the input
gradient needs Wᵀ 2:4 too. It is still 2:4 along every row.

The sparse kernels are slower than dense ones on small or oddly shaped layers,
so :func:`time_layer` measures both once per shape and :class:`SemiStructuredLinear`
keeps the dense masked matmul where sparse does not win, recording the reason.
The timing belongs before the run: :func:`decide_before_run` runs one forward of
an example batch without gradients to learn each layer's input shape and
compute dtype, then times each shape outside autocast and outside the training
clock, so the first training step is a plain step and ``torch.compile`` (after
it) never traces a timing. A layer left undecided when training starts is
decided at its first training forward, as before (timed there, in eager mode),
or, inside a ``torch.compile`` trace, takes the dense path with that reason.
CPU, fp32 compute, GPUs before sm80, a torch without cuSPARSELt and dims that are
not multiples of :data:`DIM_MULTIPLE` fall back to the dense path with a reason
string. Speed figures: ``bench/kernel_semi.py`` → ``bench/results/kernel_semi.json``
(none measured yet: this module was written without a GPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SPARSE_DTYPES = (torch.float16, torch.bfloat16)
# cuSPARSELt needs both dims of the sparse operand multiples of 16 in fp16/bf16
# (torch.sparse.SparseSemiStructuredTensorCUSPARSELT); the tile kernel works in
# larger blocks, so ask for 64 as torch's CUTLASS path does for its columns.
DIM_MULTIPLE = 64
# Dense operands (tokens) are padded to a multiple of this, as torch's cusparselt_mm does.
_ROW_MULTIPLE = 8


def device_reason(device: torch.device | str) -> str | None:
    """Why 2:4 kernels cannot run on ``device`` at all, or None when they can."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"2:4 sparse kernels are CUDA-only; this runs on {device.type}"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"2:4 sparse tensor cores need sm80+; this GPU is sm{major}{minor}"
    if not hasattr(torch, "_sparse_semi_structured_tile") or not hasattr(torch, "_cslt_sparse_mm"):
        return "this torch lacks _sparse_semi_structured_tile/_cslt_sparse_mm"
    if not torch.backends.cusparselt.is_available():
        return "this torch build has no cuSPARSELt"
    return None


def dtype_reason(dtype: torch.dtype) -> str | None:
    """Why matmuls computed in ``dtype`` cannot use 2:4 kernels, or None."""
    if dtype not in SPARSE_DTYPES:
        return (
            f"2:4 kernels take bf16/fp16; this layer computes in {str(dtype).removeprefix('torch.')}"
            " (set train.precision bf16 or fp16)"
        )
    return None


def layer_reason(module: nn.Module, parent: nn.Module | None = None) -> str | None:
    """Why ``module`` cannot take the 2:4 path whatever the device, or None when it can."""
    if isinstance(parent, nn.MultiheadAttention):
        return "MultiheadAttention reads this weight directly, not through the layer's forward"
    if type(module) is not nn.Linear:
        return f"only nn.Linear layers take the 2:4 path; this is {type(module).__name__}"
    out_features, in_features = module.weight.shape
    if out_features % DIM_MULTIPLE or in_features % DIM_MULTIPLE:
        return (
            f"2:4 kernels need both dims multiples of {DIM_MULTIPLE}; weight is "
            f"{out_features}x{in_features}"
        )
    return None


def prune_and_pack(weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(packed W, packed Wᵀ, bitmask) of the transposable 2:4 tile pruning of ``weight``."""
    packed, _meta, packed_t, _meta_t, bitmask = torch._sparse_semi_structured_tile(
        weight, algorithm="", use_cutlass=False
    )
    return packed.view(weight.shape[0], -1), packed_t.view(weight.shape[1], -1), bitmask


def tile_mask(weight: Tensor, bitmask: Tensor | None = None) -> Tensor:
    """The boolean keep-mask the tile pruning picks for ``weight`` (2:4 in rows and columns)."""
    if bitmask is None:
        bitmask = prune_and_pack(weight)[2]
    ones = torch.ones_like(weight)
    return torch._sparse_semi_structured_apply_dense(ones, bitmask) != 0


def _sparse_mm(packed: Tensor, dense_rows: Tensor) -> Tensor:
    """``dense_rows @ Sᵀ`` for the packed sparse S: (rows, k) -> (rows, S.shape[0])."""
    rows = dense_rows.shape[0]
    pad = (-rows) % _ROW_MULTIPLE
    if pad:
        dense_rows = F.pad(dense_rows, (0, 0, 0, pad))
    # S @ denseᵀ with the result transposed in the kernel: (rows, out), row-major. The
    # dense operand is made contiguous: a transposed view's strides would leave its
    # layout to cuSPARSELt's reading of them (a copy of the activations, not measured).
    out = torch._cslt_sparse_mm(packed, dense_rows.t().contiguous(), transpose_result=True)
    return out[:rows] if pad else out


class SemiStructuredLinearFunction(torch.autograd.Function):
    """y = x · sparse24(W)ᵀ + b; dx through the packed Wᵀ; dW dense (+ decay·(1-mask)·W)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        decay: float,
        on_mask: Callable[[Tensor], None] | None,
    ) -> Tensor:
        compute = weight.to(x.dtype)
        packed, packed_t, bitmask = prune_and_pack(compute)
        x2d = x.reshape(-1, x.shape[-1])
        out = _sparse_mm(packed, x2d)
        if bias is not None:
            out = out + bias.to(out.dtype)
        mask = tile_mask(compute, bitmask) if (decay or on_mask is not None) else None
        if on_mask is not None:
            on_mask(mask)
        ctx.save_for_backward(x2d, weight, packed_t, mask)
        ctx.decay = decay
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x2d, weight, packed_t, mask = ctx.saved_tensors
        grad2d = grad_out.reshape(-1, grad_out.shape[-1]).to(x2d.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _sparse_mm(packed_t, grad2d).view(*grad_out.shape[:-1], x2d.shape[1])
        if ctx.needs_input_grad[1]:
            # Straight-through: every weight, kept or pruned, gets the dense gradient.
            grad_w = (grad2d.t() @ x2d).to(weight.dtype)
            if ctx.decay:
                grad_w = grad_w + ctx.decay * weight.masked_fill(mask, 0)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_b = grad2d.sum(0, dtype=torch.float32).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None, None


def semi_structured_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    decay: float = 0.0,
    on_mask: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """``F.linear`` through the 2:4 kernels (CUDA sm80+, x in bf16/fp16).

    ``weight`` stays dense (any float dtype; cast to ``x.dtype`` for the
    kernels); ``on_mask`` receives the tile mask chosen this call.
    """
    return SemiStructuredLinearFunction.apply(x, weight, bias, decay, on_mask)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a linear layer computes in for input ``x``: autocast's if it is on."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _cuda_ms(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    fn()  # warm-up: cuSPARSELt plans, cuBLAS handles
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats * 1e3


def time_layer(
    rows: int,
    in_features: int,
    out_features: int,
    dtype: torch.dtype,
    device: torch.device | str,
    repeats: int = 10,
) -> tuple[float, float]:
    """(sparse ms, dense masked ms) for one forward+backward of a linear layer on ``rows`` tokens."""
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(rows, in_features, device=device, dtype=dtype, generator=gen)
    x.requires_grad_(True)
    weight = torch.randn(out_features, in_features, device=device, generator=gen)
    weight.requires_grad_(True)
    grad = torch.randn(rows, out_features, device=device, dtype=dtype, generator=gen)
    mask = tile_mask(weight.detach().to(dtype))

    def sparse() -> None:
        semi_structured_linear(x, weight, None, 2e-4).backward(grad)

    def dense() -> None:
        F.linear(x, (weight * mask).to(dtype)).backward(grad)

    with torch.enable_grad(), torch.cuda.device(device):
        return _cuda_ms(sparse, repeats, device), _cuda_ms(dense, repeats, device)


@dataclass
class SemiStructuredState:
    """What one swapped layer knows: its decision and how to report its mask."""

    name: str
    decay: Callable[[], float]  # the SR-STE λ in force (0 while the mask is not applied)
    active: Callable[[], bool]  # whether this step may use the sparse kernel at all
    on_mask: Callable[[Tensor], None]
    decisions: dict[str, dict[str, Any]]
    timed: dict[tuple[int, int, int, torch.dtype], tuple[float, float]] = field(
        default_factory=dict
    )

    @property
    def sparse(self) -> bool:
        return self.decisions.get(self.name, {}).get("kernel") == "semi_structured"


class SemiStructuredLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters, same state_dict keys) that may run 2:4 kernels.

    Made by :func:`swap_in` (class swap of an existing layer). On its first
    training forward it decides once, from ``x``'s shape and compute dtype:
    sparse where :func:`time_layer` finds the 2:4 path faster, else its dense
    ``forward`` (which sees whatever weight the pruner's hook put there).
    """

    semi_structured: SemiStructuredState
    dense_weight: nn.Parameter  # the Parameter itself, even while a masked view replaces it

    def forward(self, x: Tensor) -> Tensor:
        state = self.semi_structured
        if state.name not in state.decisions and self.training and torch.is_grad_enabled():
            if torch.compiler.is_compiling():  # no synchronize or nested backward in a trace
                state.decisions[state.name] = {"kernel": "dense", "reason": NOT_TIMED}
            else:
                state.decisions[state.name] = _decide(self, x)
        if state.sparse and state.active():
            return semi_structured_linear(
                x.to(compute_dtype(x)), self.dense_weight, self.bias, state.decay(), state.on_mask
            )
        return F.linear(x, self.weight, self.bias)


NOT_TIMED = (
    "not timed before the run (semi_structured.decide_before_run) and first met inside "
    "a torch.compile trace, where it cannot be timed"
)


def decide_before_run(
    model: nn.Module, example: Tensor, *, autocast: torch.dtype | None = None
) -> dict[str, dict[str, Any]]:
    """Decide each swapped layer's path (2:4 or dense) before training; the decisions made.

    Runs ``model(example)`` once without gradients, in eval mode (each module's
    mode restored after) and under ``torch.autocast(device, autocast)`` when
    ``autocast`` is given (as training will run), only to record each
    :class:`SemiStructuredLinear`'s input rows and compute dtype; then, outside
    that forward and any autocast, times each distinct shape once
    (:func:`time_layer`) and stores each layer's decision where its first
    training forward reads it. ``example`` is a training batch's inputs on the
    model's device (its batch size is the one training uses: the timing is per
    shape). Layers decided already are left as they are. Call it before
    ``torch.compile`` and outside the training clock; the seconds it takes are
    the caller's to record apart. Returns ``{layer name: decision}`` for the
    layers decided here (``kernel``, ``reason``, and the timings where timed).
    """
    layers = [
        m
        for m in model.modules()
        if isinstance(m, SemiStructuredLinear)
        and m.semi_structured.name not in m.semi_structured.decisions
    ]
    if not layers:
        return {}
    seen: dict[SemiStructuredLinear, tuple[int, torch.dtype, torch.device]] = {}

    def record_shape(module: nn.Module, args: tuple[Any, ...]) -> None:
        if not args or not isinstance(args[0], Tensor):
            return  # called with keywords: decided at its first training forward instead
        x = args[0]
        seen.setdefault(module, (x.numel() // x.shape[-1], compute_dtype(x), x.device))  # type: ignore[arg-type]

    hooks = [layer.register_forward_pre_hook(record_shape) for layer in layers]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            if autocast is not None:
                with torch.autocast(example.device.type, dtype=autocast):
                    model(example)
            else:
                model(example)
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.training = training
    made: dict[str, dict[str, Any]] = {}
    for layer in layers:
        if layer not in seen:
            continue  # not reached by this forward: decided at its first training forward
        state = layer.semi_structured
        rows, dtype, device = seen[layer]
        state.decisions[state.name] = made[state.name] = _decide_shape(layer, rows, dtype, device)
    return made


def _decide(layer: SemiStructuredLinear, x: Tensor) -> dict[str, Any]:
    return _decide_shape(layer, x.numel() // x.shape[-1], compute_dtype(x), x.device)


def _decide_shape(
    layer: SemiStructuredLinear, rows: int, dtype: torch.dtype, device: torch.device
) -> dict[str, Any]:
    reason = device_reason(device) or dtype_reason(dtype)
    if reason is not None:
        return {"kernel": "dense", "reason": reason}
    key = (rows, layer.in_features, layer.out_features, dtype)
    timed = layer.semi_structured.timed
    if key not in timed:  # one timing per shape, shared by the layers that have it
        try:
            timed[key] = time_layer(*key[:3], key[3], device)
        except Exception as exc:  # a 2:4 kernel that cannot run must not break the run
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return {
                "kernel": "dense",
                "reason": f"2:4 kernels failed when timed: {type(exc).__name__}: {first}",
            }
    sparse_ms, dense_ms = timed[key]
    faster = sparse_ms < dense_ms
    return {
        "kernel": "semi_structured" if faster else "dense",
        "reason": (
            f"2:4 {'faster' if faster else 'not faster'} at {rows}x{layer.in_features}"
            f"->{layer.out_features}: {sparse_ms:.3f} ms sparse vs {dense_ms:.3f} ms dense"
        ),
        "sparse_ms": sparse_ms,
        "dense_ms": dense_ms,
        "dtype": str(key[3]).removeprefix("torch."),
    }


def swap_in(module: nn.Linear, state: SemiStructuredState) -> SemiStructuredLinear:
    """Turn ``module`` into a :class:`SemiStructuredLinear` in place (parameters untouched)."""
    module.__class__ = SemiStructuredLinear
    module.semi_structured = state
    # In __dict__, not _parameters: no second state_dict key, no second parameter.
    object.__setattr__(module, "dense_weight", module.weight)
    return module  # type: ignore[return-value]


def swap_out(module: nn.Module) -> None:
    """Undo :func:`swap_in`: a plain ``nn.Linear`` again."""
    if isinstance(module, SemiStructuredLinear):
        del module.semi_structured
        del module.__dict__["dense_weight"]
        module.__class__ = nn.Linear
