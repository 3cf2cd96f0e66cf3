"""The fused KD loss against F.cross_entropy + F.kl_div: forward+backward time and memory.

Per class count C ∈ {10, 1000, 32000} at B = 8192 rows (fp32 logits; bf16 too on
CUDA), teacher rows gathered through an index from a cached table, as the
training loop does:

- ``reference``: ``kd_loss_reference`` (``F.cross_entropy`` + ``F.kl_div`` on
  ``log_softmax``, what ``datapruning.train.kd`` computes per example);
- ``dispatched``: ``kd_loss`` with the default backend. On CUDA that is the
  fused Triton kernel; on CPU it is the reference plus the argument checks
  (Triton runs on CPU only in its interpreter, far too slow to time, so the
  fused kernel's speed is not measured on CPU).

Time: median (and minimum) of ``reps`` forward+backward steps
(``loss.mean().backward()``) after a warm-up step, the two paths' steps
alternating. Memory: on CUDA the peak of
``torch.cuda.max_memory_allocated`` during a step, above what the inputs
already hold. On CPU torch keeps no allocator statistics, so the peak is not
measured there; what is measured on both is the bytes each path keeps for
backward (autograd's saved tensors, read with ``saved_tensors_hooks``), and on
CPU the fused kernel's saved bytes per row are measured in the interpreter on a
few rows. On CPU, C = 32000 uses B = 1024 (the reference's B×C intermediates
at B = 8192 are ~1 GiB each, more than this shared machine should spend).

GPU goals (issue 11, item 4): at C = 1000 the fused path ≥ 2× faster and ≥ 50 %
less peak memory than the reference.

Whole runs (issue 24, item 4: the CPU path costs no more than what it replaces):
``loop`` trains the same MLP (MNIST-1D's shape: 40 features, 10 classes, two
hidden layers of 128, batch 128, SGD with momentum, teacher logits from a cached
table through an index) for ``--loop-steps`` steps twice per round, in rounds
that alternate which goes first: ``bare``, a hand-written loop whose loss is
``(1-α)·F.cross_entropy + α·T²·F.kl_div(log_softmax, log_softmax, batchmean)``,
and ``dispatched``, the same loop with ``kd_loss(...).mean()`` (the loop's
call). The figure is the ratio of the medians over rounds (goal: ≤ 1.03), of
CPU time on CPU (one thread: less disturbed by the shared machine's other jobs
than wall time) and of synchronised wall time on CUDA.

    .venv/bin/python bench/kernel_kd.py                 # writes bench/results/kernel_kd_cpu.json
    python bench/kernel_kd.py --device cuda             # writes bench/results/kernel_kd_cuda.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provenance import kernel_machine

RESULTS = Path(__file__).resolve().parent / "results"
# The GPU machine runs this from a plain checkout, without the package installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
CLASSES = (10, 1000, 32000)
BATCH = 8192
CPU_BATCH_AT_32000 = 1024


def run(device: str = "cpu", quick: bool = False, threads: int | None = None) -> dict[str, Any]:
    """Time and memory of both paths at each class count on ``device``; the figures as a dict.

    ``threads`` sets torch's CPU threads (default: torch's own choice).
    """
    if device == "cpu":
        # The fused kernel's saved bytes are measured on CPU in Triton's interpreter,
        # which is read when the kernel module is first imported.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    from datapruning.kernels import HAVE_TRITON, forced_backend

    if threads is not None:
        torch.set_num_threads(threads)
    from datapruning.kernels.kd_loss import kd_loss, kd_loss_reference

    reps = 2 if quick else 7
    dtypes = [torch.float32] + ([torch.bfloat16] if device.startswith("cuda") else [])
    cases = []
    for classes in CLASSES:
        batch = BATCH
        if device == "cpu" and classes >= 32000:
            batch = CPU_BATCH_AT_32000
        if quick:
            batch = min(batch, 256)
        for dtype in dtypes:
            inputs = _inputs(batch, classes, dtype, device, torch)
            case: dict[str, Any] = {
                "batch": batch,
                "classes": classes,
                "dtype": str(dtype).removeprefix("torch."),
                "alpha": 0.5,
                "temperature": 4.0,
                "teacher_rows": inputs["teacher_logits"].shape[0],
            }
            paths = {"reference": (kd_loss_reference, "torch"), "dispatched": (kd_loss, "auto")}
            seconds: dict[str, list[float]] = {name: [] for name in paths}
            # Warm-up (Triton compiles, allocators settle), then the paths' steps
            # alternate, so a burst of load on the shared machine hits both alike.
            for rep in range(reps + 1):
                for name, (function, backend) in paths.items():
                    with forced_backend(backend):
                        elapsed = _timed_step(function, inputs, device, torch)
                    if rep > 0:
                        seconds[name].append(elapsed)
            for name, (function, backend) in paths.items():
                with forced_backend(backend):
                    case[name] = {
                        "median_seconds": statistics.median(seconds[name]),
                        # The least disturbed step, for a machine shared with other work.
                        "min_seconds": min(seconds[name]),
                        "seconds": seconds[name],
                        **_memory(function, inputs, device, torch),
                    }
            ref, fused = case["reference"], case["dispatched"]
            case["speedup"] = ref["median_seconds"] / fused["median_seconds"]
            case["speedup_of_min"] = ref["min_seconds"] / fused["min_seconds"]
            if device.startswith("cuda"):
                case["peak_memory_saving"] = 1 - fused["peak_extra_bytes"] / ref["peak_extra_bytes"]
            elif HAVE_TRITON:
                case["fused_saved_bytes_per_row"] = _fused_saved_bytes_per_row(
                    classes, dtype, torch, kd_loss, forced_backend
                )
            cases.append(case)
            del inputs
    result = {
        "device": device,
        "machine": kernel_machine(device),
        "reps": reps,
        "quick": quick,
        "cases": cases,
        "goals": {"at": "C=1000, GPU", "speedup": 2.0, "peak_memory_saving": 0.5},
    }
    if device.startswith("cuda"):
        at_1000 = [case for case in cases if case["classes"] == 1000]
        result["goals_met"] = {
            case["dtype"]: {
                "speedup": case["speedup"] >= 2.0,
                "peak_memory_saving": case["peak_memory_saving"] >= 0.5,
            }
            for case in at_1000
        }
    return result


LOOP = {"features": 40, "classes": 10, "hidden": 128, "batch": 128, "examples": 4000}


def loop_run(
    device: str = "cpu", steps: int = 300, rounds: int = 5, threads: int | None = None
) -> dict[str, Any]:
    """Seconds of whole KD training loops: bare F.cross_entropy + KL against kd_loss."""
    import torch
    import torch.nn.functional as F

    from datapruning.kernels import paths_taken, reset_paths
    from datapruning.kernels.kd_loss import kd_loss

    if threads is not None:
        torch.set_num_threads(threads)
    alpha, temperature = 0.5, 4.0
    gen = torch.Generator().manual_seed(0)
    n, features, classes = LOOP["examples"], LOOP["features"], LOOP["classes"]
    x = torch.randn(n, features, generator=gen).to(device)
    y = torch.randint(0, classes, (n,), generator=gen).to(device)
    table = (torch.randn(n, classes, generator=gen) * 3).to(device)
    order = torch.randint(0, n, (steps, LOOP["batch"]), generator=gen).to(device)

    def bare(logits: Any, targets: Any, index: Any) -> Any:
        teacher = table[index]
        kl = F.kl_div(
            F.log_softmax(logits / temperature, dim=1),
            F.log_softmax(teacher / temperature, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        return (1 - alpha) * F.cross_entropy(logits, targets) + alpha * temperature**2 * kl

    def dispatched(logits: Any, targets: Any, index: Any) -> Any:
        return kd_loss(logits, targets, table, index, alpha=alpha, temperature=temperature).mean()

    def one_run(loss_fn: Any) -> tuple[float, float]:
        torch.manual_seed(0)
        hidden = LOOP["hidden"]
        model = torch.nn.Sequential(
            torch.nn.Linear(features, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, classes),
        ).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
        # CPU: this process's CPU time (one thread), which another job on the shared
        # machine disturbs less than wall time; CUDA: wall time, synchronised.
        clock = time.perf_counter if cuda else time.process_time
        start = clock()
        for index in order:
            loss = loss_fn(model(x[index]), y[index], index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if cuda:
            torch.cuda.synchronize()
        return clock() - start, float(loss.detach())

    runs = {"bare": bare, "dispatched": dispatched}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    final: dict[str, float] = {}
    reset_paths()
    one_run(dispatched)  # warm-up (and the probe, on CUDA)
    one_run(bare)
    for r in range(rounds):
        names = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in names:
            elapsed, final[name] = one_run(runs[name])
            seconds[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        **LOOP,
        "steps": steps,
        "rounds": rounds,
        "alpha": alpha,
        "temperature": temperature,
        "seconds": seconds,
        "median_seconds": medians,
        "ratio": medians["dispatched"] / medians["bare"],
        "ratio_of_min": min(seconds["dispatched"]) / min(seconds["bare"]),
        "final_loss": final,
        "kd_loss_path": paths_taken().get("kd_loss"),
        "goal": {"ratio": 1.03},
    }


def _inputs(batch: int, classes: int, dtype: Any, device: str, torch: Any) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    # A cached teacher table twice the batch; the batch's rows come through an index.
    rows = 2 * batch
    return {
        "student_logits": (torch.randn(batch, classes, generator=generator) * 3).to(device, dtype),
        "targets": torch.randint(0, classes, (batch,), generator=generator).to(device),
        "teacher_logits": (torch.randn(rows, classes, generator=generator) * 3).to(device, dtype),
        "index": torch.randperm(rows, generator=generator)[:batch].to(device),
    }


def _step(function: Callable[..., Any], inputs: dict[str, Any], torch: Any) -> Any:
    student = inputs["student_logits"].detach().requires_grad_()
    loss = function(
        student,
        inputs["targets"],
        inputs["teacher_logits"],
        inputs["index"],
        alpha=0.5,
        temperature=4.0,
    )
    loss.mean().backward()
    return student.grad


def _timed_step(
    function: Callable[..., Any], inputs: dict[str, Any], device: str, torch: Any
) -> float:
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    _step(function, inputs, torch)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _memory(
    function: Callable[..., Any], inputs: dict[str, Any], device: str, torch: Any
) -> dict[str, Any]:
    result: dict[str, Any] = {"saved_for_backward_bytes": _saved_bytes(function, inputs, torch)}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        grad = _step(function, inputs, torch)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        del grad
        result["peak_bytes"] = peak
        result["peak_extra_bytes"] = peak - base
    else:
        result["peak_bytes"] = None  # torch keeps no CPU allocator statistics
    return result


def _saved_bytes(function: Callable[..., Any], inputs: dict[str, Any], torch: Any) -> int:
    """Bytes of the distinct tensors autograd keeps between forward and backward."""
    storages: dict[int, int] = {}

    def pack(tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    student = inputs["student_logits"].detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function(
            student,
            inputs["targets"],
            inputs["teacher_logits"],
            inputs["index"],
            alpha=0.5,
            temperature=4.0,
        )
    # The inputs themselves are held by the caller anyway.
    held = {
        inputs[name].untyped_storage().data_ptr()
        for name in ("student_logits", "targets", "teacher_logits", "index")
    }
    return sum(nbytes for ptr, nbytes in storages.items() if ptr not in held)


def _fused_saved_bytes_per_row(
    classes: int, dtype: Any, torch: Any, kd_loss: Any, forced_backend: Any
) -> float:
    # A few rows in Triton's interpreter: the kernel keeps only the B×C gradient.
    rows = 4
    inputs = _inputs(rows, classes, dtype, "cpu", torch)
    with forced_backend("triton"):
        return _saved_bytes(kd_loss, inputs, torch) / rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--quick", action="store_true", help="small batches, two reps (a smoke run)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; 1 on a shared, busy machine)",
    )
    parser.add_argument("--out", type=Path, help="default: bench/results/kernel_kd_<device>.json")
    parser.add_argument(
        "--loop-steps", type=int, default=300, help="steps of each whole-loop run (default 300)"
    )
    parser.add_argument(
        "--loop-rounds", type=int, default=5, help="rounds of the whole-loop pair (default 5)"
    )
    args = parser.parse_args(argv)

    from datapruning._io import write_json

    result = {"command": " ".join([Path(sys.executable).name, *sys.argv])}
    result.update(run(args.device, args.quick, args.threads))
    steps, rounds = (50, 2) if args.quick else (args.loop_steps, args.loop_rounds)
    result["loop"] = loop_run(args.device, steps, rounds, args.threads)
    out = args.out or RESULTS / f"kernel_kd_{args.device.split(':')[0]}.json"
    write_json(out, result)
    for case in result["cases"]:
        ref, fused = case["reference"], case["dispatched"]
        print(
            f"B={case['batch']} C={case['classes']} {case['dtype']}: reference "
            f"{ref['median_seconds'] * 1e3:.2f} ms, dispatched {fused['median_seconds'] * 1e3:.2f} ms "
            f"({case['speedup']:.2f}x); saved for backward {ref['saved_for_backward_bytes']} vs "
            f"{fused['saved_for_backward_bytes']} bytes",
            file=sys.stderr,
        )
    loop = result["loop"]
    print(
        f"whole KD loop, {loop['steps']} steps x {loop['rounds']} rounds: bare "
        f"{loop['median_seconds']['bare']:.3f} s, dispatched "
        f"{loop['median_seconds']['dispatched']:.3f} s (ratio {loop['ratio']:.3f})",
        file=sys.stderr,
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
