"""What InfoBatch costs per step beyond the plain step that full data and RS2 take.

bench/results/dynamic.json (40,000 MNIST-1D examples, convnet1d(16), KD) had
InfoBatch at 21.8 s against RS2's 17.7 s for the same number of examples
backpropagated (backward fraction 0.728), with only 0.39 s counted as
selection. This script times InfoBatch's pieces one by one, with this
process's CPU time and one torch thread (the machine is shared: its wall clock
swings 2-5x with other jobs, as bench/kernel_step.py found), each variant's
reps alternating with the others' so that load hits them alike; the figure
is the median rep:

- ``step_plain``: the loop's :class:`~datapruning.train.step.TrainStep` on a
  batch (forward, per-example KD loss from cached teacher logits, mean,
  backward, SGD step, LR schedule): what full data and RS2 run per batch;
- ``step_infobatch``: the same step as the loop runs it for InfoBatch, with
  the sampler's per-example weights (a weighted mean) and the after-step hook
  that records the batch's losses (:class:`~datapruning.train.algorithms.infobatch.InfoBatch`),
  under :class:`~datapruning.train.schedule.DynamicStepPlan`'s LR schedule;
- its parts alone: ``weights`` (the batch's weights looked up),
  ``update`` (the losses written into the table), ``reduce_weighted`` less
  ``reduce_plain`` (forward and backward of the weighted mean against the mean);
- ``set_epoch``: planning one pruned epoch from the table (once per epoch);
- ``loop``: whole runs through :func:`datapruning.train.loop.train`, CPU time
  of the whole call per step: full data against InfoBatch with ``prune: 0``
  (the same examples in the same order with weights of 1: only the machinery
  differs), and InfoBatch (prune 0.5) against RS2 at the share of examples
  InfoBatch took (as bench/dynamic.py pairs them).

    .venv/bin/python bench/infobatch_overhead.py --out bench/results/infobatch_overhead.json

bench/results/infobatch_overhead_before.json is the same script run, just
before, on the library as it was before this change (``library`` in the JSON:
a copy of commit a381203's datapruning/ and models/), one after the other on
the same machine. bench/results/infobatch_overhead_40k.json is the loop pairs
on the dataset size of bench/dynamic.py (``--reps 10 --loop-samples 50000
--loop-epochs 4 --loop-reps 5``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from provenance import provenance

import datapruning
from datapruning._io import write_json
from datapruning.config import DataConfig, KDConfig, ModelConfig, TrainConfig
from datapruning.data.infobatch import InfoBatchSampler
from datapruning.data.sources import load_dataset
from datapruning.models import build_model
from datapruning.train.algorithms.infobatch import InfoBatch
from datapruning.train.device import resolve_precision
from datapruning.train.loop import train
from datapruning.train.schedule import DynamicStepPlan, StepPlan, make_optimizer, make_scheduler
from datapruning.train.step import TrainStep, make_loss_fn, reduce_losses

clock = time.process_time


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num-train", type=int, default=40_000, help="the loss table's size")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--channels", type=int, default=16, help="convnet1d width")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--steps-per-rep", type=int, default=100)
    parser.add_argument("--loop-samples", type=int, default=12_500, help="train + test (80/20)")
    parser.add_argument("--loop-epochs", type=int, default=3)
    parser.add_argument("--loop-reps", type=int, default=3)
    parser.add_argument("--note", default=None, help="recorded as is (e.g. which code ran)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    n, batch = args.num_train, args.batch_size
    x = torch.randn(n, 1, 40)
    y = torch.randint(0, 10, (n,))
    teacher = torch.randn(n, 10)
    loss_fn = make_loss_fn(teacher, alpha=0.5, temperature=4.0)
    cfg = TrainConfig(lr=0.02, threads=1)
    steps_per_epoch = math.ceil(n / batch)
    plain_plan = StepPlan(steps_per_epoch, 10**7, 10**7 // steps_per_epoch, steps_per_epoch)
    sampler = InfoBatchSampler(n, 16, prune=0.5, anneal=0.125, seed=0)
    sampler.update(torch.arange(n), torch.rand(n))  # a table as after epoch 0
    sampler.set_epoch(1)
    dynamic_plan = DynamicStepPlan(
        steps_per_epoch, 10**7, 10**7 // steps_per_epoch, steps_per_epoch,
        epoch_steps=lambda _: math.ceil(len(sampler) / batch),
    )  # fmt: skip
    dynamic_plan.begin_epoch(1, steps_per_epoch, math.ceil(len(sampler) / batch))
    precision = resolve_precision("fp32", torch.device("cpu"))

    def make_step(dynamic: bool) -> TrainStep:
        model = build_model("convnet1d", (1, 40), 10, channels=args.channels)
        optimizer = make_optimizer(model.parameters(), cfg)
        plan = dynamic_plan if dynamic else plain_plan
        hooks = [InfoBatch(sampler).after_step] if dynamic else []
        return TrainStep(model, loss_fn, optimizer, make_scheduler(optimizer, plan), precision,
                         after_step=hooks)  # fmt: skip

    order = torch.as_tensor(sampler.epoch_indices())
    batches = [order[i : i + batch] for i in range(0, len(order) - batch + 1, batch)]
    plain, dynamic = make_step(False), make_step(True)
    cursor = {"i": 0, "step": 0}

    def next_batch() -> torch.Tensor:
        cursor["i"] = (cursor["i"] + 1) % len(batches)
        cursor["step"] += 1
        return batches[cursor["i"]]

    def step_plain() -> None:
        index = next_batch()
        plain(x[index], y[index], index, cursor["step"])

    def step_infobatch() -> None:
        index = next_batch()
        dynamic(x[index], y[index], index, cursor["step"], sampler.weights(index))

    losses = torch.rand(batch, requires_grad=True)

    def weights() -> None:
        sampler.weights(next_batch())

    def update() -> None:
        sampler.update(next_batch(), losses.detach())

    def reduce_plain() -> None:
        reduce_losses(losses).backward()

    def reduce_weighted() -> None:
        reduce_losses(losses, sampler.weights(next_batch())).backward()

    variants: dict[str, Callable[[], None]] = {
        "step_plain": step_plain,
        "step_infobatch": step_infobatch,
        "weights": weights,
        "update": update,
        "reduce_plain": reduce_plain,
        "reduce_weighted": reduce_weighted,
    }
    per_step = _alternate(variants, args.reps, args.steps_per_rep)
    micro = {name: statistics.median(times) * 1e6 for name, times in per_step.items()}

    def set_epoch() -> None:
        sampler._plan = None  # plan the epoch again from the same table
        sampler.set_epoch(1)

    planning = _alternate({"set_epoch": set_epoch}, args.reps, 1)["set_epoch"]
    loop = _loop(args)

    plain_us, infobatch_us = micro["step_plain"], micro["step_infobatch"]
    out = {
        **provenance(__file__, argv),
        "note": args.note,
        "library": str(Path(datapruning.__file__).parent),
        "clock": "process CPU time, one torch thread; median of alternating reps",
        "setup": {
            "num_train": n,
            "batch_size": batch,
            "model": f"convnet1d(channels={args.channels})",
            "loss": "KD from cached teacher logits (alpha 0.5, T 4)",
            "reps": args.reps,
            "steps_per_rep": args.steps_per_rep,
        },
        "per_step_us": micro,
        "infobatch_step_overhead": infobatch_us / plain_us - 1,
        "parts_us": {
            "weights": micro["weights"],
            "update": micro["update"],
            "weighted_reduction": micro["reduce_weighted"] - micro["reduce_plain"],
        },
        "set_epoch_ms": statistics.median(planning) * 1e3,
        "loop": loop,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print({k: round(v, 1) for k, v in micro.items()})
    print(f"step overhead {out['infobatch_step_overhead']:+.1%}, set_epoch "
          f"{out['set_epoch_ms']:.1f} ms, loop: prune 0 vs full {loop['prune0_vs_full']:+.1%}, "
          f"infobatch vs rs2 {loop['infobatch_vs_rs2']:+.1%}")  # fmt: skip
    return out


def _alternate(
    variants: dict[str, Callable[[], None]], reps: int, steps: int
) -> dict[str, list[float]]:
    """Seconds per call of each variant, one figure per rep; reps alternate between variants."""
    for call in variants.values():  # warm-up: allocator, first-call dispatch
        for _ in range(max(3, steps // 10)):
            call()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, call in variants.items():
            start = clock()
            for _ in range(steps):
                call()
            times[name].append((clock() - start) / steps)
    return times


def _loop(args: argparse.Namespace) -> dict[str, Any]:
    """Whole runs, CPU time per step: InfoBatch at prune 0 against full data (the same
    examples in the same order), and InfoBatch at prune 0.5 against RS2 at the share of
    examples InfoBatch took (the same number of steps)."""
    data = load_dataset("mnist1d", {"num_samples": args.loop_samples, "seed": 42})
    model = ModelConfig(name="convnet1d", params={"channels": args.channels})
    base = TrainConfig(
        epochs=args.loop_epochs, batch_size=args.batch_size, lr=0.02, eval_every=0,
        targets=[0.9], threads=1,
    )  # fmt: skip
    teacher = train(data, model, base.model_copy(update={"seed": 1000}), progress=False).model
    kd = KDConfig(alpha=0.5, temperature=4.0)

    def run(spec: DataConfig) -> tuple[float, dict[str, Any]]:
        start = clock()
        summary = train(data, model, base.model_copy(update={"data": spec}), teacher=teacher,
                        kd=kd, progress=False).summary  # fmt: skip
        return (clock() - start) / summary["steps"], summary

    infobatch = DataConfig(mode="infobatch", prune=0.5, anneal=0.125)
    fraction = run(infobatch)[1]["cost"]["backward_fraction"]
    specs = {
        "full": DataConfig(),
        "infobatch_prune0": DataConfig(mode="infobatch", prune=0.0),
        "infobatch": infobatch,
        "rs2": DataConfig(mode="rs2", fraction=fraction),
    }
    cpu: dict[str, list[float]] = {name: [] for name in specs}
    runs: dict[str, dict[str, Any]] = {}
    for _ in range(args.loop_reps):
        for name, spec in specs.items():
            seconds, summary = run(spec)
            cpu[name].append(seconds)
            runs[name] = {
                "steps": summary["steps"],
                "final_test_acc": summary["final_test_acc"],
                "selection_seconds": summary["cost"]["selection_seconds"],
            }
    medians = {name: statistics.median(times) * 1e3 for name, times in cpu.items()}
    return {
        "num_train": data.num_train,
        "epochs": args.loop_epochs,
        "reps": args.loop_reps,
        "clock": "process CPU time of the whole train() call (teacher logits, setup and the "
        "final evaluation included) per optimizer step",
        "rs2_fraction": fraction,
        "cpu_ms_per_step": medians,
        "cpu_ms_per_step_reps": {name: [t * 1e3 for t in times] for name, times in cpu.items()},
        "runs": runs,
        "prune0_vs_full": medians["infobatch_prune0"] / medians["full"] - 1,
        "infobatch_vs_rs2": medians["infobatch"] / medians["rs2"] - 1,
    }


if __name__ == "__main__":
    main()
