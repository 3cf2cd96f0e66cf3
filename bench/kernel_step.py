"""The whole training step, images/s: torch's fp32 step against the fused, mixed-precision one.

    python bench/kernel_step.py [--device cpu|cuda] [--quick]

writes bench/results/kernel_step_<device>.json. One step is what the loop runs
per batch (:class:`datapruning.train.step.TrainStep`): uint8 images to float
(and to channels-last), forward, per-example KD loss against cached teacher
logits gathered by index, backward, optimizer step, after-step hook (the
pruner). ResNet-18 (SGD, Nesterov momentum) and the ViT (AdamW) from
``models.build_model`` on CIFAR-shaped data (random 3×32×32 uint8 images,
10 classes, random teacher logits), built from the library's public pieces so
it does not depend on how the loop wires them:

- ``fp32_torch``: fp32, torch's SGD/AdamW (foreach), the torch KD loss
  (``make_loss_fn``, i.e. ``per_example_kd_loss``);
- ``fused``: on CUDA bf16 autocast + channels-last (ResNet-18; the ViT's only
  conv is its patch embedding, so it stays contiguous) + ``torch.compile`` of
  the model + the fused KD loss kernel (``datapruning.kernels.kd_loss``) +
  MaskedSGD/MaskedAdamW (no masks). On CPU: fp32, channels-last and the same
  dispatchers, which take their torch references there (Triton runs on CPU
  only in its interpreter); bf16 and compile are left out of it on CPU, why in
  the JSON (``cpu_notes``), and bf16 is timed apart (``fused_bf16``, full run only);
- ``*_gmp90``: the same step with 90% global magnitude sparsity
  (``MagnitudePruner``, scope global, masks set at step 0): for ``fp32_torch``
  today's path (the pruner's ``masked_fill_`` of weights and optimizer state
  after every step), for ``fused`` the masked optimizer given the pruner's
  masks, the hook only asking the schedule whether masks change. The overhead
  is ``fused_gmp90`` over ``fused`` (goal on a GPU: <= 5%). How long one mask
  update (global select + ``set_masks``) takes is timed apart: during the GMP
  ramp it happens every ``sparsity.every`` steps (default 2% of the run).

Dense and sparse variants of one configuration share one model (and its one
compilation); their steps alternate rep by rep, so load on a shared machine
hits both alike. After warm-up, each rep times ``steps_per_rep`` steps; the
figure is the median rep. Clock: on CUDA wall time with the device
synchronised before and after each rep; on CPU this process's CPU time with
one torch thread (the CPU machine is shared and its wall clock swings 2-5x with
other jobs). Compile time (first compiled step less the second) is recorded
apart, not in the images/s.

Measured on CPU (bench/results/kernels.json, ``python bench/kernels.py --threads 1``,
2-core shared AMD EPYC, torch 2.13.0): ResNet-18 at batch 16, 15.9 images/s fp32 torch,
16.9 the fused path (fp32, channels-last, references), 1.1 in bf16; the ViT at batch
32, 111.1 / 110.1 / 9.0. 90% GMP costs +4.0% (ResNet-18) and -3.3% (ViT, noise) with
the masked optimizer, +4.7% / +7.9% with torch's optimizer then ``masked_fill_``.
The GPU figures (and the <= 5% goal) wait for ``bench/gpu_check.sh`` on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The GPU machine runs this from a plain checkout, without the package installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from provenance import kernel_machine
from torch import Tensor, nn

from datapruning._io import write_json
from datapruning.config import SparsityConfig, sparsity_config
from datapruning.kernels import use_triton
from datapruning.kernels.kd_loss import kd_loss
from datapruning.kernels.masked_optim import MaskedAdamW, MaskedSGD
from datapruning.models import build_model
from datapruning.train.device import Precision
from datapruning.train.schedule import StepPlan, make_scheduler
from datapruning.train.sparsity import MagnitudePruner
from datapruning.train.step import StepResult, TrainStep, make_loss_fn

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE, CLASSES = (3, 32, 32), 10
SPARSITY = 0.9
ALPHA, TEMPERATURE = 0.5, 4.0
# Per model: the optimizer it trains with (torch class, masked class, settings).
MODELS: dict[str, tuple[type, type, dict[str, Any]]] = {
    "resnet18": (
        torch.optim.SGD,
        MaskedSGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    ),
    "vit": (torch.optim.AdamW, MaskedAdamW, {"lr": 1e-3, "weight_decay": 0.05}),
}
# CPU batches are small: one fp32 ResNet-18 step at batch 32 takes ~2.4 s of CPU here.
BATCH = {"cuda": {"resnet18": 256, "vit": 256}, "cpu": {"resnet18": 16, "vit": 32}}
QUICK_BATCH = {"resnet18": 4, "vit": 8}
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def run(device: str = "cpu", quick: bool = False) -> dict[str, Any]:
    """Images/s of each step variant for each model on ``device``; the figures as a dict."""
    cuda = device.startswith("cuda")
    if not cuda:
        torch.set_num_threads(1)
    plan = {
        "reps": (3 if quick else 7) if cuda else (1 if quick else 5),
        "steps_per_rep": 10 if cuda else 1,
        "warmup_steps": (3 if quick else 5) if cuda else 1,
        "compile": cuda,
        "precision": "bf16" if cuda else "fp32",
    }
    result: dict[str, Any] = {
        "device": device,
        "quick": quick,
        "machine": kernel_machine(device),
        "clock": "wall, device synchronised around each rep"
        if cuda
        else "process CPU time, one torch thread (the machine is shared)",
        **plan,
        "sparsity": SPARSITY,
        "kd": {"alpha": ALPHA, "temperature": TEMPERATURE},
        "models": {},
        "goals": {"gpu": {"gmp90_overhead_max": 0.05}},
    }
    if not cuda:
        result["cpu_notes"] = {
            "compile": "left out on CPU: torch.compile of these models takes about a minute "
            "per model on this 2-core machine, and the CPU step is not what the fused path "
            "is for; compile is timed on CUDA",
            "bf16": "the fused variant stays fp32 on CPU: CPU bf16 autocast without bf16 "
            "hardware is far slower than fp32 (see fused_bf16, timed in the full run)",
        }
    for name in MODELS:
        batch = QUICK_BATCH[name] if quick and not cuda else BATCH["cuda" if cuda else "cpu"][name]
        result["models"][name] = _bench_model(
            name, device, batch, plan, with_bf16=not (cuda or quick)
        )
    if cuda:
        # fp32_torch's convolutions and matmuls: TF32 or true fp32 (torch's defaults).
        result["tf32"] = {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        }
        result["goals_met"] = {
            name: figures["gmp90_overhead"] <= 0.05 for name, figures in result["models"].items()
        }
    return result


class _Variant:
    """One way of stepping: a TrainStep over a model, with its optimizer and hooks."""

    def __init__(self, name: str, step: TrainStep, model: nn.Module, channels_last: bool) -> None:
        self.name, self.step, self.model, self.channels_last = name, step, model, channels_last
        self.steps = 0


def _bench_model(
    name: str, device: str, batch: int, plan: dict[str, Any], with_bf16: bool
) -> dict[str, Any]:
    cuda = device.startswith("cuda")
    torch_cls, masked_cls, settings = MODELS[name]
    torch.manual_seed(0)
    base = build_model(name, SHAPE, CLASSES)
    has_conv = any(isinstance(m, nn.Conv2d) for m in base.modules())
    channels_last = has_conv and name != "vit"
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, *SHAPE), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, CLASSES, (batch,), generator=generator)
    # Cached teacher logits of a training set four batches long; the batch's rows by index.
    teacher = torch.randn(4 * batch, CLASSES, generator=generator) * 3
    index = torch.randperm(4 * batch, generator=generator)[:batch]
    images, labels, teacher, index = (t.to(device) for t in (images, labels, teacher, index))
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
    schedule = StepPlan(steps_per_epoch=1000, total_steps=10**6, epochs=1000, warmup_steps=0)
    gmp = sparsity_config(target=SPARSITY, scope="global", start=0, end=0, every=1)
    precision_fp32 = Precision("fp32", torch.device(device))

    # fp32_torch and fp32_torch_gmp90: one plain fp32 model.
    plain = _copy(name, base, device, channels_last=False)
    plain_pruner = MagnitudePruner(plain, gmp, schedule.total_steps)
    torch_loss = make_loss_fn(teacher, alpha=ALPHA, temperature=TEMPERATURE)
    variants = []
    opt = torch_cls(plain.parameters(), foreach=True, **settings)
    variants.append(
        _Variant(
            "fp32_torch",
            TrainStep(plain, torch_loss, opt, make_scheduler(opt, schedule), precision_fp32),
            plain,
            False,
        )
    )
    opt = torch_cls(plain.parameters(), foreach=True, **settings)
    variants.append(
        _Variant(
            "fp32_torch_gmp90",
            TrainStep(
                plain,
                torch_loss,
                opt,
                make_scheduler(opt, schedule),
                precision_fp32,
                after_step=[lambda r, o=opt: plain_pruner.step(r.step, o)],
            ),
            plain,
            False,
        )
    )

    # fused and fused_gmp90: one model (channels-last, compiled on CUDA).
    fast = _copy(name, base, device, channels_last=channels_last)
    fast_pruner = MagnitudePruner(fast, gmp, schedule.total_steps)
    masks = {fast_pruner.weights[n]: keep for n, keep in fast_pruner.masks.items()}
    forward = torch.compile(fast) if plan["compile"] else fast
    precision = Precision(plan["precision"], torch.device(device))

    def fused_loss(logits: Tensor, y: Tensor, rows: Tensor) -> Tensor:
        return kd_loss(logits, y, teacher, rows, alpha=ALPHA, temperature=TEMPERATURE)

    opt = masked_cls(fast.parameters(), **settings)
    variants.append(
        _Variant(
            "fused",
            TrainStep(forward, fused_loss, opt, make_scheduler(opt, schedule), precision),
            fast,
            channels_last,
        )
    )
    sparse_opt = masked_cls(fast.parameters(), masks=masks, **settings)

    def gmp_hook(result: StepResult) -> None:
        # What the loop's pruner hook does with a masked optimizer: new masks only
        # when the schedule says so (never, here: they were set at step 0).
        if fast_pruner.schedule.updates_at(result.step):
            fast_pruner.step(result.step)
            sparse_opt.set_masks(
                {fast_pruner.weights[n]: keep for n, keep in fast_pruner.masks.items()}
            )

    variants.append(
        _Variant(
            "fused_gmp90",
            TrainStep(
                forward,
                fused_loss,
                sparse_opt,
                make_scheduler(sparse_opt, schedule),
                precision,
                after_step=[gmp_hook],
            ),
            fast,
            channels_last,
        )
    )

    def step(variant: _Variant) -> None:
        x = (images.float() - mean) / std
        if variant.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        variant.steps += 1
        variant.step(x, labels, index, variant.steps)

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    clock = time.perf_counter if cuda else time.process_time
    out: dict[str, Any] = {
        "batch": batch,
        "parameters": sum(p.numel() for p in base.parameters()),
        "optimizer": {"torch": torch_cls.__name__, "fused": masked_cls.__name__, **settings},
        "channels_last": channels_last,
        "masked_optimizer_path": "triton"
        if use_triton(*fast.parameters())
        else "torch reference (foreach, then masked_fill_)",
        "kd_loss_path": "triton" if use_triton(teacher) else "torch reference",
    }
    # The first compiled steps, timed alone: compile (forward and backward graphs).
    if plan["compile"]:
        firsts = []
        for _ in range(2):
            sync()
            start = time.perf_counter()
            step(variants[2])
            sync()
            firsts.append(time.perf_counter() - start)
        out["compile_seconds"] = round(max(0.0, firsts[0] - firsts[1]), 2)
    seconds = _alternate(variants, step, plan, sync, clock)
    if with_bf16:
        bf16 = _Variant(
            "fused_bf16",
            TrainStep(
                fast,
                fused_loss,
                opt,
                make_scheduler(opt, schedule),
                Precision("bf16", torch.device(device)),
            ),
            fast,
            channels_last,
        )
        # One rep after one warm-up step: a bf16 step on this CPU takes tens of seconds.
        seconds |= _alternate([bf16], step, plan | {"reps": 1, "warmup_steps": 1}, sync, clock)
    out["seconds_per_step"] = {k: round(statistics.median(v), 5) for k, v in seconds.items()}
    out["seconds_per_step_all_reps"] = {k: [round(s, 5) for s in v] for k, v in seconds.items()}
    out["images_per_second"] = {k: round(batch / v, 2) for k, v in out["seconds_per_step"].items()}
    per_step = out["seconds_per_step"]
    out["speedup_fused_vs_fp32_torch"] = round(per_step["fp32_torch"] / per_step["fused"], 3)
    out["gmp90_overhead"] = round(per_step["fused_gmp90"] / per_step["fused"] - 1, 4)
    out["gmp90_overhead_fp32_torch"] = round(
        per_step["fp32_torch_gmp90"] / per_step["fp32_torch"] - 1, 4
    )
    # A sparse step last, then its guarantee: pruned weights (and state) exactly zero.
    step(variants[3])
    sync()
    out["pruned_weights_exactly_zero"] = all(
        bool((w.detach()[~keep] == 0).all()) for w, keep in masks.items()
    )
    pruned_size = sum(keep.numel() for keep in masks.values())
    out["zeros_in_pruned_layers"] = round(
        sum(int((w.detach() == 0).sum()) for w in masks) / pruned_size, 4
    )
    out["mask_update_seconds"] = _mask_update_seconds(
        fast, sparse_opt, gmp, sync, clock, reps=1 if plan["reps"] == 1 else 3
    )
    out["mask_update_in_fused_steps"] = round(out["mask_update_seconds"] / per_step["fused"], 3)
    return out


def _copy(name: str, base: nn.Module, device: str, channels_last: bool) -> nn.Module:
    model = build_model(name, SHAPE, CLASSES)
    model.load_state_dict(base.state_dict())
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def _alternate(
    variants: list[_Variant],
    step: Callable[[_Variant], None],
    plan: dict[str, Any],
    sync: Callable[[], None],
    clock: Callable[[], float],
) -> dict[str, list[float]]:
    """Seconds per step of each rep of each variant, the variants' reps alternating."""
    for variant in variants:
        for _ in range(plan["warmup_steps"]):
            step(variant)
    seconds: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(plan["reps"]):
        for variant in variants:
            sync()
            start = clock()
            for _ in range(plan["steps_per_rep"]):
                step(variant)
            sync()
            seconds[variant.name].append((clock() - start) / plan["steps_per_rep"])
    return seconds


def _mask_update_seconds(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    gmp: SparsityConfig,
    sync: Callable[[], None],
    clock: Callable[[], float],
    reps: int,
) -> float:
    """One GMP mask update mid-ramp: the global select over the pruned layers, then set_masks."""
    ramp = gmp.model_copy(update={"start": 0, "end": 100, "every": 1})
    pruner = MagnitudePruner(model, ramp, 100)
    times = []
    for at in range(50, 50 + reps):
        sync()
        start = clock()
        pruner.step(at)
        optimizer.set_masks({pruner.weights[n]: keep for n, keep in pruner.masks.items()})
        sync()
        times.append(clock() - start)
    return round(statistics.median(times), 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="small batches, one rep (a smoke run)")
    parser.add_argument("--out", type=Path, help="default: bench/results/kernel_step_<device>.json")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    args_given = argv if argv is not None else sys.argv[1:]
    result = {"command": " ".join(["python", "bench/kernel_step.py", *args_given])}
    result |= run(args.device, args.quick)
    out = args.out or RESULTS / f"kernel_step_{args.device.split(':')[0]}.json"
    write_json(out, result)
    for name, figures in result["models"].items():
        rates = ", ".join(f"{k} {v:.1f}" for k, v in figures["images_per_second"].items())
        print(
            f"{name} (batch {figures['batch']}): images/s {rates}; "
            f"90% GMP overhead {figures['gmp90_overhead']:+.1%}",
            file=sys.stderr,
        )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
