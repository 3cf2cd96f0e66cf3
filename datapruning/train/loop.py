"""The training loop shared by teacher, scoring and student runs.

``train`` resolves everything a run needs into one
:class:`~datapruning.train.run.Run` (:func:`~datapruning.train.run.resolve_run`:
data and sampler, batches, step plan, model, pruner, teacher logits, KD
settings, targets, device, precision, resume state) before anything is
written, then :func:`fit` runs it and ``train`` writes the summary and
checkpoint. This module holds the loop only.

The step is chosen once, before the first batch
(:class:`datapruning.train.step.TrainStep`): forward under the run's autocast → per-example losses ``loss_fn(logits, y, index)``
(cross-entropy, or KD from the teacher's cached logits) → their mean, or a
weighted mean → backward (through the fp16 gradient scaler where there is
one) → ``optimizer.step()`` → the after-step hooks (the pruner) → the LR
schedule. The recipe (optimizer, cosine LR over the steps actually taken, so
a run on a subset, RS2 or a step budget anneals fully in its own steps) is
:mod:`datapruning.train.schedule`'s; evaluation is :mod:`datapruning.train.evaluation`'s.

Dynamic data (:mod:`datapruning.train.dynamic`) plugs into the same step:
``infobatch`` passes the sampler's per-example weights to the step, records the
losses in an after-step hook and plans its epochs' lengths through
:class:`~datapruning.train.schedule.DynamicStepPlan`; ``online`` picks each
batch's top-loss share before the step, scored by the student or by a proxy
model that trains on what it keeps (:class:`~datapruning.train.dynamic.ProxySelection`,
part of the resume state). summary.json's ``cost`` says what any
run forwarded and backpropagated against full data, and what choosing cost.

The time-to-accuracy clock counts training only: it runs over stretches of
steps and synchronises an asynchronous device (CUDA) when it starts and stops;
evaluation runs every ``eval_every`` epochs on its own clock. A run directory
receives ``metrics.jsonl`` (one line per evaluation; an append-only log,
rewritten atomically from the resume state when the run starts or resumes),
``summary.json`` and ``checkpoint.pt``; with ``checkpoint_every`` it also holds
``resume.pt`` (:class:`datapruning.train.state.TrainState`) while the run is
unfinished, and the same call continues from it after a crash (a SIGKILL at
any moment included), ending with the same weights bit for bit (on CPU;
tests/test_crash_resume.py kills ``datapruning train`` at seeded random
moments). SIGINT and SIGTERM stop the run at the next step boundary with a
resume point (:mod:`datapruning._interrupt`), checkpointing on or not.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from datapruning._interrupt import StopRequest, deferred_stop
from datapruning._io import remove_stale_temporaries, write_json, write_text
from datapruning.config import KDConfig, TrainConfig
from datapruning.data.infobatch import InfoBatchSampler
from datapruning.data.loaders import Batch
from datapruning.data.sources import Dataset
from datapruning.errors import Interrupted
from datapruning.kernels import use_triton
from datapruning.train.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, save_checkpoint
from datapruning.train.device import synchronizer
from datapruning.train.dynamic import (
    LossRecorder,
    OnlineSelection,
    ProxySelection,
    cost_summary,
    full_data_examples,
)
from datapruning.train.evaluation import evaluate
from datapruning.train.kd import OnlineTeacher
from datapruning.train.run import Run, describe, resolve_run, torch_settings
from datapruning.train.schedule import make_optimizer, make_scheduler, optimizer_path
from datapruning.train.sparsity import MagnitudePruner, export_sparse
from datapruning.train.state import RESUME_NAME, TrainState, forked_rngs, set_rng_state
from datapruning.train.step import AfterStep, CompileTimer, StepResult, TrainStep, make_loss_fn
from datapruning.train.summary import SUMMARY_FORMAT, SUMMARY_NAME
from datapruning.train.tta import Stopwatch, time_to_accuracy
from datapruning.user import ModelSpec, as_dataset

__all__ = [
    "METRICS_NAME",
    "RESUME_NAME",
    "SUMMARY_FORMAT",
    "SUMMARY_NAME",
    "TrainResult",
    "fit",
    "resolve_run",
    "train",
]

METRICS_NAME = "metrics.jsonl"


@dataclass
class TrainResult:
    model: nn.Module
    summary: dict[str, Any]
    run_dir: Path | None


def train(
    dataset: Dataset | Any,
    model_cfg: ModelSpec,
    train_cfg: TrainConfig,
    *,
    indices: np.ndarray | None = None,
    teacher: str | os.PathLike[str] | nn.Module | None = None,
    kd: KDConfig | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    extra_summary: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    teacher_seconds: float | None = None,
    scoring_seconds: float | None = None,
) -> TrainResult:
    """Train one model and return it with its summary.

    Args:
        dataset: the data; the test split is used for evaluation. Also ``(x, y)`` arrays
            or a torch Dataset of ``(x, y)`` items (:func:`datapruning.user.as_dataset`,
            20% of each class held out for testing; call it yourself to give a test split).
        model_cfg: a ModelConfig naming a registered model (name None: the dataset's
            default), or your own ``nn.Module`` (trained in place) or a factory returning
            one (called under the run's seed).
        train_cfg: optimisation, data mode, evaluation, clock and resume settings.
        indices: train only on these training-set indices (overrides ``train_cfg.data``,
            which must then be ``full``).
        teacher: a checkpoint path, a ``.npy`` of logits, or a model to distil from
            (default: ``kd.teacher`` or ``kd.teacher_logits``).
        kd: distillation settings; without a teacher anywhere, no distillation.
        run_dir: where to write metrics.jsonl, summary.json and checkpoint.pt (and
            resume.pt with ``train_cfg.checkpoint_every``); an unfinished run there
            with the same settings is continued.
        extra_summary: fields copied into summary.json (recipe name, ...).
        progress: show a progress bar (None: only on a terminal).
        teacher_seconds: the teacher's training time, for end-to-end time in the summary.
        scoring_seconds: the scoring time behind the subset (default: read from the
            scores file of ``train_cfg.data``, else 0).
    """
    # Everything that can be wrong with the input fails here, before the run
    # directory is touched.
    dataset = as_dataset(dataset)
    run = resolve_run(
        dataset, model_cfg, train_cfg, indices=indices, teacher=teacher, kd=kd,
        run_dir=run_dir, progress=progress,
    )  # fmt: skip
    if run.run_dir is not None:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        # summary.json marks a finished run; a rerun is unfinished until it ends.
        (run.run_dir / SUMMARY_NAME).unlink(missing_ok=True)
        # What a run killed while writing one of its files left (the run dir is this run's).
        remove_stale_temporaries(
            run.run_dir, (RESUME_NAME, METRICS_NAME, CHECKPOINT_NAME, SUMMARY_NAME)
        )
    summary = {"format_version": SUMMARY_FORMAT, **fit(run)}
    summary.update(describe(run, teacher_seconds, scoring_seconds, extra_summary))
    # Student-only time is train_seconds; end to end adds whatever had to run first.
    summary["end_to_end_seconds"] = summary["train_seconds"] + sum(
        float(summary.get(key) or 0.0)
        for key in ("teacher_seconds", "teacher_logits_seconds", "scoring_seconds")
    )
    if run.run_dir is not None:
        save_checkpoint(
            run.run_dir / CHECKPOINT_NAME,
            {
                "format_version": CHECKPOINT_FORMAT,
                "model": run.model_name,
                "model_params": dict(run.model_params),
                "input_shape": list(dataset.input_shape),
                "num_classes": dataset.num_classes,
                "dataset_fingerprint": dataset.fingerprint,
                "state_dict": export_sparse(run.model, run.pruner),
                "epochs": summary["epochs"],
                "steps": summary["steps"],
            },
        )
        write_json(run.run_dir / SUMMARY_NAME, summary)
        (run.run_dir / RESUME_NAME).unlink(missing_ok=True)
    return TrainResult(model=run.model, summary=summary, run_dir=run.run_dir)


def fit(run: Run) -> dict[str, Any]:
    """Run the steps ``run`` plans, evaluating between epochs; the run's part of the summary."""
    with torch_settings(run.cfg), forked_rngs(run.device):
        set_rng_state(run.rng, run.device)
        return _fit(run)


def _fit(run: Run) -> dict[str, Any]:
    cfg, plan, model, device = run.cfg, run.plan, run.model, run.device
    sampler, batches = run.data.sampler, run.batches
    # A pruner that zeroes pruned weights gets a masked optimizer (zeros kept inside
    # its step, fused on CUDA); dynamic N:M keeps dense weights and a plain one.
    pruner = run.pruner
    masks = pruner.optimizer_masks() if isinstance(pruner, MagnitudePruner) else None
    optimizer = make_optimizer(model.parameters(), cfg, masks=masks)
    scheduler = make_scheduler(optimizer, plan)
    scaler = run.precision.scaler()
    after_step: list[AfterStep] = []
    if pruner is not None:

        def prune(result: StepResult) -> None:  # the schedule's masks, to the masked optimizer
            # A dynamic plan's short epoch may pass several of the schedule's steps at once.
            for schedule_step in plan.schedule_steps(result.step):
                pruner.step(schedule_step, optimizer)

        after_step.append(prune)
    online = run.kd is not None and isinstance(run.kd.teacher, OnlineTeacher)
    loss_fn = (
        make_loss_fn(
            run.teacher_logits, alpha=run.kd.alpha, temperature=run.kd.temperature, online=online
        )
        if run.kd is not None
        else make_loss_fn()
    )
    # Dynamic data: InfoBatch weighs the losses and records them; online selection
    # scores each candidate batch first. Both report what choosing cost.
    infobatch = sampler if isinstance(sampler, InfoBatchSampler) else None
    recorder = LossRecorder(infobatch) if infobatch is not None else None
    if recorder is not None:
        after_step.append(recorder)
    select: OnlineSelection | ProxySelection | None = None
    online_teacher = run.kd.teacher.model if run.kd is not None and online else None
    if run.data.online_keep is not None and run.proxy is not None:
        # The proxy trains with the run's recipe: its own optimizer and the same LR schedule.
        proxy_optimizer = make_optimizer(run.proxy.parameters(), cfg)
        select = ProxySelection(
            run.proxy,
            loss_fn,
            run.data.online_keep,
            proxy_optimizer,
            make_scheduler(proxy_optimizer, plan),
            run.precision,
            run.precision.scaler(),
            synchronizer(device),
            teacher=online_teacher,
            every=cfg.data.proxy_every,
        )
    elif run.data.online_keep is not None:
        select = OnlineSelection(
            model,
            loss_fn,
            run.data.online_keep,
            run.precision,
            synchronizer(device),
            teacher=online_teacher,
        )
    state = TrainState(
        model,
        optimizer,
        scheduler,
        sampler,
        run.pruner,
        scaler,
        device,
        run.augmenter,
        select if isinstance(select, ProxySelection) else None,
    )
    resume_step = None
    if run.resume is not None:
        state.load_state_dict(run.resume)
        resume_step = state.progress.step
    progress = state.progress
    selection_before, scored_before, planning = progress.selection_seconds, progress.scored, [0.0]

    def count_selection() -> None:
        progress.selection_seconds = selection_before + planning[0]
        progress.selection_seconds += recorder.seconds if recorder is not None else 0.0
        progress.selection_seconds += select.seconds if select is not None else 0.0
        progress.scored = scored_before + (select.scored if select is not None else 0)

    step: TrainStep | CompileTimer = TrainStep(
        model,
        loss_fn,
        optimizer,
        scheduler,
        run.precision,
        scaler,
        after_step,
        teacher=run.kd.teacher.model if run.kd is not None and online else None,
    )
    sync = synchronizer(device)
    compile_timer = None
    if cfg.compile:
        step = compile_timer = CompileTimer(step, sync)
    compiled_before = progress.compile_seconds
    to_device = _batch_mover(run)

    train_clock, eval_clock = Stopwatch(sync), Stopwatch()
    train_clock.seconds, eval_clock.seconds = progress.train_seconds, progress.eval_seconds

    def save_resume(epoch: int, batch: int) -> None:
        if run.run_dir is None:
            return
        progress.epoch, progress.batch = epoch, batch
        progress.train_seconds, progress.eval_seconds = train_clock.seconds, eval_clock.seconds
        if compile_timer is not None:
            progress.compile_seconds = compiled_before + compile_timer.seconds
        count_selection()
        state.save(run.run_dir / RESUME_NAME, run.config_hash)

    def interrupted(stop: StopRequest) -> Interrupted:
        assert stop.signum is not None
        if run.run_dir is None:
            return Interrupted(stop.signum, f"stopped at step {progress.step}, nothing saved")
        return Interrupted(
            stop.signum,
            f"resume point at step {progress.step} of {plan.total_steps} written to "
            f"{str(run.run_dir / RESUME_NAME)!r}",
        )

    log = None
    if run.run_dir is not None:
        # An append-only log, rewritten (atomically) from the resume state when a run
        # starts or resumes: lines a killed run logged after its resume point go away.
        path = run.run_dir / METRICS_NAME
        write_text(path, "".join(json.dumps(line) + "\n" for line in progress.lines))
        log = path.open("a")
    bar = tqdm(
        total=plan.total_steps,
        initial=progress.step,
        desc="train",
        unit="step",
        disable=_hide(run.progress),
        leave=False,
    )
    try:
        with deferred_stop() as stop:
            for epoch in range(progress.epoch, plan.epochs):
                # From here: InfoBatch plans the epoch in set_epoch, and that is training time.
                train_clock.start()
                planned = time.perf_counter()
                sampler.set_epoch(epoch)
                if infobatch is not None:
                    planning[0] += time.perf_counter() - planned
                model.train()
                epoch_steps = plan.steps_in_epoch(epoch)
                skip, progress.batch = (progress.batch, 0) if epoch == progress.epoch else (0, 0)
                plan.begin_epoch(epoch, progress.step - skip, epoch_steps)
                if not skip:
                    progress.loss_sum, progress.seen = 0.0, 0
                # On the device: adding the loss to a host number would wait for every step.
                loss_sum = torch.tensor(progress.loss_sum, dtype=torch.float64, device=device)
                batch_iter = iter(batches)
                for _ in range(skip):  # a resumed epoch: the batches already taken
                    next(batch_iter)
                checkpoint_due = False
                for batch in range(skip, epoch_steps):
                    if progress.step >= plan.total_steps:
                        break
                    x, y, index = to_device(next(batch_iter))
                    if select is not None:
                        x, y, index = select(x, y, index)
                    if infobatch is None:
                        loss = step(x, y, index, progress.step + 1)
                    else:  # InfoBatch weighs up the low-loss examples it kept
                        loss = step(x, y, index, progress.step + 1, infobatch.weights(index))
                    loss_sum += loss.double() * len(y)
                    progress.seen += len(y)
                    progress.examples += len(y)
                    progress.step += 1
                    bar.update()
                    if cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0:
                        if batch + 1 < epoch_steps and progress.step < plan.total_steps:
                            train_clock.stop()
                            progress.loss_sum = float(loss_sum)
                            save_resume(epoch, batch + 1)
                            train_clock.start()
                        else:  # an epoch's last step: save after its evaluation
                            checkpoint_due = True
                    # SIGINT/SIGTERM: a resume point here, at a step boundary (at an
                    # epoch's end, after its evaluation, below).
                    if stop and batch + 1 < epoch_steps and progress.step < plan.total_steps:
                        train_clock.stop()
                        progress.loss_sum = float(loss_sum)
                        save_resume(epoch, batch + 1)
                        raise interrupted(stop)
                train_clock.stop()
                progress.loss_sum = float(loss_sum)
                # A dynamic plan's epochs may end short of total_steps: the last epoch ends it.
                finished = progress.step >= plan.total_steps or epoch + 1 == plan.epochs
                if finished or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
                    with eval_clock.running():
                        test_loss, test_acc = evaluate(
                            model, run.x_test, run.y_test, cfg.batch_size
                        )
                    progress.curve.append((train_clock.seconds, test_acc))
                    line = {
                        "epoch": epoch + 1,
                        "step": progress.step,
                        "train_seconds": round(train_clock.seconds, 4),
                        "eval_seconds": round(eval_clock.seconds, 4),
                        "train_loss": progress.loss_sum / max(progress.seen, 1),
                        "test_loss": test_loss,
                        "test_acc": test_acc,
                        "lr": scheduler.get_last_lr()[0],
                    }
                    progress.lines.append(line)
                    if log is not None:
                        log.write(json.dumps(line) + "\n")
                        log.flush()
                    bar.set_postfix(acc=f"{test_acc:.3f}")
                if (checkpoint_due or stop) and not finished:
                    save_resume(epoch + 1, 0)
                if stop and not finished:  # a finished run is written out instead
                    raise interrupted(stop)
                if finished:
                    break
    finally:
        bar.close()  # before an interruption's message
        if log is not None:
            log.close()
    count_selection()
    accuracies = [acc for _, acc in progress.curve]
    last = progress.lines[-1]
    return {
        "final_test_acc": accuracies[-1],
        "best_test_acc": max(accuracies),
        "final_test_loss": last["test_loss"],
        "train_seconds": train_clock.seconds,
        "eval_seconds": eval_clock.seconds,
        "compile_seconds": (
            compiled_before + compile_timer.seconds if compile_timer is not None else None
        ),
        "epochs": plan.epochs,
        "steps": progress.step,
        "steps_per_epoch": plan.steps_per_epoch,
        "warmup_steps": plan.warmup_steps,
        "targets": run.targets,
        "time_to_accuracy": time_to_accuracy(progress.curve, run.targets),
        "resumed_from_step": resume_step,
        "sparsity": run.pruner.report() if run.pruner is not None else None,
        "kernels": _kernel_paths(run, optimizer),
        "cost": cost_summary(
            trained=progress.examples,
            scored=progress.scored,
            full_data=full_data_examples(
                run.dataset.num_train, plan.epochs, cfg.steps, cfg.batch_size
            ),
            selection_seconds=progress.selection_seconds,
            sampler=infobatch,
            proxy=_proxy_record(run, select),
        ),
    }


def _proxy_record(run: Run, select: Any) -> dict[str, Any] | None:
    """What the summary's cost says about online selection's proxy model."""
    if not isinstance(select, ProxySelection) or run.cfg.data.proxy is None:
        return None
    spec = run.cfg.data.proxy
    return {
        "model": spec.name or run.dataset.default_model,
        "params": dict(spec.params),
        "every": select.every,
        "backward_examples": select.trained,
        "parameters": select.parameters,
        "student_parameters": sum(p.numel() for p in run.model.parameters()),
    }


def _kernel_paths(run: Run, optimizer: torch.optim.Optimizer) -> dict[str, str | None]:
    """Which implementation each fused piece of the step took (Triton or torch), for the summary."""
    kd = None
    if run.kd is not None:
        # Online, the kernel gets the teacher's batch logits, on the device as the inputs are.
        table = run.teacher_logits if run.teacher_logits is not None else run.x_test
        kd = "triton" if use_triton(table) else "torch"
    masks = None
    if run.pruner is not None:
        weight = next(iter(run.pruner.weights.values()))
        if run.pruner.cfg.scope == "nm":
            masks = f"nm_mask ({'triton' if use_triton(weight) else 'torch'})"
        else:  # kernels.masks.kth_smallest: a radix select on CUDA, kthvalue elsewhere
            masks = "select (radix, cuda)" if weight.is_cuda else "select (kthvalue, torch)"
    return {"kd_loss": kd, "optimizer": optimizer_path(optimizer), "masks": masks}


def _batch_mover(run: Run) -> Callable[[Batch], Batch]:
    """How a loader's batch reaches the model (and its augmentation), chosen once for the run."""
    device, channels_last = run.device, run.cfg.channels_last
    streaming = run.cfg.loader == "torch"  # memory and ffcv batches are on the device already
    augment = run.augmenter

    def move(batch: Batch) -> Batch:
        x, y, index = batch
        if streaming:  # pinned by the DataLoader on CUDA: the copy overlaps compute
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            index = index.to(device, non_blocking=True)
        if augment is not None:  # on the device, inside the training clock
            x = augment(x)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y, index

    if not streaming and not channels_last and augment is None:
        return lambda batch: batch
    return move


def _hide(progress: bool | None) -> bool | None:
    # tqdm treats disable=None as "hide unless stderr is a terminal".
    return None if progress is None else not progress
