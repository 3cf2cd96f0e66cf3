"""The training loop shared by teacher, scoring and student runs.

``train`` resolves everything a run needs into one
:class:`~datapruning.train.run.Run` (:func:`~datapruning.train.run.resolve_run`:
data and sampler, batches, step plan, model, pruner, teacher logits, KD
settings, targets, device, precision, resume state) before anything is
written, then :func:`fit` runs it and ``train`` writes the summary and
checkpoint. This module holds the loop only.

The step is chosen once, before the first batch
(:class:`datapruning.train.step.TrainStep`): forward under the run's autocast →
per-example losses (cross-entropy, or what an algorithm made of it: KD) → their
mean, or a weighted mean → backward (through the fp16 gradient scaler where
there is one) → ``optimizer.step()`` → the algorithms' after-step hooks (the
pruner, InfoBatch's loss recorder) → the LR schedule. The recipe (optimizer,
cosine LR over the steps actually taken, so a run on a subset, RS2 or a step
budget anneals fully in its own steps) is :mod:`datapruning.train.schedule`'s;
evaluation is :mod:`datapruning.train.evaluation`'s.

Everything optional is an algorithm (:mod:`datapruning.train.algorithms`: KD,
the pruners, InfoBatch, online selection) that the loop calls at its events
without knowing which it is: at the start, at each epoch's start, on each
batch before the step, for per-example loss weights, after each step and
after each evaluation; each adds its state to the resume point and its part to
the summary. summary.json's ``cost`` says what any run forwarded and
backpropagated against full data, and what choosing the data cost.

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
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from datapruning._interrupt import StopRequest, deferred_stop
from datapruning._io import remove_stale_temporaries, write_json, write_text
from datapruning._progress import Progress
from datapruning.data.dataset import Dataset
from datapruning.data.loaders import Batch
from datapruning.errors import DataPruningError, Interrupted
from datapruning.kernels import paths_taken
from datapruning.train import distributed
from datapruning.train.algorithms import Trainer, overriding
from datapruning.train.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, save_checkpoint
from datapruning.train.device import synchronizer
from datapruning.train.dynamic import cost_summary, full_data_examples
from datapruning.train.evaluation import evaluate
from datapruning.train.run import Run, describe, resolve_run, torch_settings
from datapruning.train.schedule import make_optimizer, make_scheduler, optimizer_path
from datapruning.train.settings import KDConfig, TrainConfig
from datapruning.train.state import (
    RANK_KEYS,
    RESUME_NAME,
    TrainState,
    forked_rngs,
    set_rng_state,
)
from datapruning.train.step import CompileTimer, Loss, TrainStep, make_loss_fn
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
    "train_run",
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
        dataset: the data (its test split evaluates); or ``(x, y)`` arrays or a torch Dataset
            of ``(x, y)``, of which :func:`datapruning.user.as_dataset` holds out 20% of each
            class for testing, with a warning (call it with ``test=`` to give a test split).
        model_cfg: a ModelConfig naming a registered model (name None: the dataset's
            default), or your own ``nn.Module`` (trained in place) or a factory returning
            one (called under the run's seed).
        train_cfg: optimisation, data mode, evaluation, clock and resume settings.
        indices: train only on these training-set indices (overrides ``train_cfg.data``,
            which must then be ``full``).
        teacher: a checkpoint path, a ``.npy`` of logits, or a model to distil from
            (default: ``kd.teacher`` or ``kd.teacher_logits``).
        kd: distillation settings; without a teacher anywhere, no distillation.
        run_dir: where metrics.jsonl, summary.json, checkpoint.pt (and resume.pt) go; an
            unfinished run there with the same settings is continued.
        extra_summary: fields copied into summary.json (recipe name, ...).
        progress: None a bar on a terminal, else a line per epoch on stderr; False nothing.
        teacher_seconds, scoring_seconds: what the teacher and the scores behind the subset
            cost, for end-to-end time (default: from ``train_cfg.data``'s scores, else 0).

    ``datapruning.train`` is this function: :func:`~datapruning.train.run.resolve_run` (all
    checked and built before a file is written), then :func:`train_run`.

    Example (an MLP on half of 120 examples, chosen by score; about a second on a CPU)::

        >>> import numpy as np
        >>> import datapruning
        >>> from datapruning import ModelConfig, TrainConfig, as_dataset
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(120, 8)).astype("float32"), np.arange(120) % 3
        >>> data = as_dataset((x, y), test=(x[:30], y[:30]))
        >>> kept = np.arange(0, 120, 2)
        >>> result = datapruning.train(
        ...     data, ModelConfig(name="mlp"), TrainConfig(epochs=2, batch_size=20), indices=kept
        ... )
        >>> result.summary["steps"], result.summary["num_train_examples"]
        (6, 60)
    """
    dataset = as_dataset(dataset)  # bad input fails here, before the run dir is touched
    run = resolve_run(
        dataset, model_cfg, train_cfg, indices=indices, teacher=teacher, kd=kd,
        run_dir=run_dir, progress=progress,
    )  # fmt: skip
    return train_run(run, teacher_seconds, scoring_seconds, extra_summary)


def train_run(
    run: Run,
    teacher_seconds: float | None = None,
    scoring_seconds: float | None = None,
    extra_summary: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train a resolved run (:func:`resolve_run`) and write its outputs; see :func:`train`."""
    world = run.world
    if run.run_dir is not None and world.writes:
        _open_run_dir(run.run_dir)
    world.barrier()  # the other ranks start once the run directory is ready
    summary = {
        "format_version": SUMMARY_FORMAT,
        **describe(run, teacher_seconds, scoring_seconds),
        **fit(run),
        **dict(extra_summary or {}),
    }
    # Student-only time is train_seconds; end to end adds whatever had to run first.
    summary["end_to_end_seconds"] = summary["train_seconds"] + sum(
        float(summary.get(key) or 0.0)
        for key in ("teacher_seconds", "teacher_logits_seconds", "scoring_seconds")
    )
    if run.run_dir is not None and world.writes:
        _write_outputs(run, summary)
    world.barrier()  # the run is finished for every rank once its files are written
    return TrainResult(model=run.model, summary=summary, run_dir=run.run_dir)


def _open_run_dir(run_dir: Path) -> None:
    """The run directory, as an unfinished run's: summary.json (which marks a finished run)
    removed, and what a run killed while writing one of its files left behind."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUMMARY_NAME).unlink(missing_ok=True)
    remove_stale_temporaries(run_dir, (RESUME_NAME, METRICS_NAME, CHECKPOINT_NAME, SUMMARY_NAME))


def _write_outputs(run: Run, summary: dict[str, Any]) -> None:
    """checkpoint.pt, then summary.json (which marks the run finished); the resume point goes."""
    assert run.run_dir is not None
    state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    for algorithm in run.algorithms:  # pruned weights as real zeros
        algorithm.export(state)
        algorithm.write(run.run_dir)  # its own files (recorded scores)
    save_checkpoint(
        run.run_dir / CHECKPOINT_NAME,
        {
            "format_version": CHECKPOINT_FORMAT,
            "model": run.model_name,
            "model_params": dict(run.model_params),
            "input_shape": list(run.dataset.input_shape),
            "num_classes": run.dataset.num_classes,
            "dataset_fingerprint": run.dataset.fingerprint,
            "state_dict": state,
            "epochs": summary["epochs"],
            "steps": summary["steps"],
        },
    )
    write_json(run.run_dir / SUMMARY_NAME, summary)
    (run.run_dir / RESUME_NAME).unlink(missing_ok=True)


def fit(run: Run) -> dict[str, Any]:
    """Run the steps ``run`` plans, evaluating between epochs; the run's part of the summary."""
    with torch_settings(run.cfg), forked_rngs(run.device):
        set_rng_state(run.rng, run.device)
        loop = _Loop(run)
        with loop.output(), deferred_stop() as stop:
            for epoch in range(loop.progress.epoch, run.plan.epochs):
                if loop.epoch(epoch, stop):
                    break
        return loop.summary()


class _Loop:
    """One run's training: the step, the clocks, the log and the resume points."""

    def __init__(self, run: Run) -> None:
        self.run, self.algorithms = run, run.algorithms
        cfg, model = run.cfg, run.model
        masks = next((m for a in self.algorithms if (m := a.optimizer_masks()) is not None), None)
        self.optimizer = make_optimizer(model.parameters(), cfg, masks=masks)
        self.scheduler = make_scheduler(self.optimizer, run.plan)
        self.scaler = scaler = run.precision.scaler()
        loss = Loss(make_loss_fn())
        for algorithm in self.algorithms:
            loss = algorithm.loss(loss)
        sync = synchronizer(run.device)
        trainer = Trainer(
            model, self.optimizer, self.scheduler, run.plan, loss, run.precision, run.device, sync
        )
        for algorithm in self.algorithms:
            algorithm.start(trainer)
        self.state = TrainState(
            model, self.optimizer, self.scheduler, run.data.sampler, scaler, run.device,
            run.augmenter, self.algorithms,
        )  # fmt: skip
        if run.resume is not None:
            self.state.load_state_dict(run.resume)
        self.progress = progress = self.state.progress
        self.resumed_from = progress.step if run.resume is not None else None
        self.before = (progress.selection_seconds, progress.scored, progress.compile_seconds)
        after_step = [a.after_step for a in overriding(self.algorithms, "after_step")]
        self.world = run.world
        assert run.trained_model is not None
        self.step: TrainStep | CompileTimer = TrainStep(
            run.trained_model, loss.fn, self.optimizer, self.scheduler, run.precision, scaler, after_step,
            teacher=loss.teacher, clip_grad_norm=cfg.clip_grad_norm,
        )  # fmt: skip
        self.compile_timer = None
        if cfg.compile:
            self.step = self.compile_timer = CompileTimer(self.step, sync)
        self.to_device = _batch_mover(run)
        self.selectors = [a.batch for a in overriding(self.algorithms, "batch")]
        self.weigh = next((a.weights for a in overriding(self.algorithms, "weights")), None)
        self.epoch_starts = overriding(self.algorithms, "epoch_start")
        self.epoch_ends = overriding(self.algorithms, "epoch_end")
        self.after_evals = overriding(self.algorithms, "after_eval")
        self.train_clock, self.eval_clock = Stopwatch(sync), Stopwatch()
        self.train_clock.seconds, self.eval_clock.seconds = (
            progress.train_seconds,
            progress.eval_seconds,
        )
        self.log: Any = None
        self.bar: Any = None

    @contextmanager
    def output(self) -> Iterator[None]:
        """The metrics log (rewritten from the resume state, then appended) and progress bar."""
        run, progress = self.run, self.progress
        if run.run_dir is not None and self.world.writes:
            # Lines a killed run logged after its resume point go away.
            path = run.run_dir / METRICS_NAME
            write_text(path, "".join(json.dumps(line) + "\n" for line in progress.lines))
            self.log = path.open("a")
        # A bar on a terminal, a line per epoch elsewhere (datapruning._progress).
        self.bar = Progress(
            "train", run.plan.total_steps, "step", run.progress, initial=progress.step,
            per_tenth=False,
        )  # fmt: skip
        try:
            yield
        finally:
            self.bar.close()  # before an interruption's message
            if self.log is not None:
                self.log.close()

    def epoch(self, epoch: int, stop: StopRequest) -> bool:
        """Train epoch ``epoch`` (the rest of it, when resumed), evaluate; whether the run ended."""
        run, progress, plan = self.run, self.progress, self.run.plan
        self.train_clock.start()  # planning the epoch (InfoBatch) is training time
        for algorithm in self.epoch_starts:
            algorithm.epoch_start(epoch)
        run.data.sampler.set_epoch(epoch)
        run.model.train()
        epoch_steps = plan.steps_in_epoch(epoch)
        skip, progress.batch = (progress.batch, 0) if epoch == progress.epoch else (0, 0)
        plan.begin_epoch(epoch, progress.step - skip, epoch_steps)
        if not skip:
            progress.loss_sum, progress.seen = 0.0, 0
        with distributed.collective(self.world):  # a rank that dies: one line
            checkpoint_due = self.steps(epoch, skip, epoch_steps, stop)
        self.train_clock.stop()
        self.check_finite(epoch)
        for algorithm in self.epoch_ends:
            algorithm.epoch_end(epoch)
        # A dynamic plan's epochs may end short of total_steps: the last epoch ends it.
        finished = progress.step >= plan.total_steps or epoch + 1 == plan.epochs
        if finished or (run.cfg.eval_every and (epoch + 1) % run.cfg.eval_every == 0):
            self.evaluate(epoch)
            self.check_learning()
        halt = self.agree(stop)  # a signal during the evaluation: every rank stops here
        self.bar.epoch_end(epoch + 1, plan.epochs, progress.loss_sum / max(progress.seen, 1))
        if (checkpoint_due or halt) and not finished:
            self.save_resume(epoch + 1, 0)
        if halt and not finished:  # a finished run is written out instead
            raise self.interrupted(halt)
        return finished

    def check_finite(self, epoch: int) -> None:
        """Stop a run whose training loss is no longer a number, before it is evaluated or
        saved (the last resume point, if any, is kept). With fp16's gradient scaler an
        overflowing step is skipped by the scaler itself, so its loss is not checked."""
        loss = self.world.reduce([self.progress.loss_sum])[0]  # every rank stops, or none
        if math.isfinite(loss) or self.scaler is not None:
            return
        where = f"in epoch {epoch + 1} (by step {self.progress.step})"
        cfg = self.run.cfg
        resume = self.run.run_dir / RESUME_NAME if self.run.run_dir is not None else None
        kept = f"; the resume point {str(resume)!r} is kept" if resume and resume.exists() else ""
        raise DataPruningError(
            f"the training loss became {loss} {where}: the run diverged; lower train.lr "
            f"({cfg.lr:g}) or lengthen train.warmup_epochs{kept}"
        )

    def check_learning(self) -> None:
        """Stop a run still at chance after its first evaluations while its training loss
        grows (at least doubled since the first): training on would spend every epoch at
        chance."""
        lines, classes = self.progress.lines, self.run.dataset.num_classes
        if len(lines) < 2 or any(line["test_acc"] > 1.5 / classes for line in lines):
            return
        # Grows: doubles at least, so neither a small run's noise at chance nor InfoBatch's
        # full last epochs (a loss over all examples after pruned ones) stop anything.
        first, last = lines[0]["train_loss"], lines[-1]["train_loss"]
        if last < 2 * first:
            return
        raise DataPruningError(
            f"the run is at chance ({lines[-1]['test_acc']:.1%} test accuracy after "
            f"{lines[-1]['epoch']} epochs, {classes} classes) while its training loss grows "
            f"({first:.3g} -> {last:.3g}): it diverged; lower train.lr ({self.run.cfg.lr:g}) "
            "or lengthen train.warmup_epochs"
        )

    def steps(self, epoch: int, skip: int, epoch_steps: int, stop: StopRequest) -> bool:
        """The epoch's steps from batch ``skip``; whether a resume point is due at its end."""
        progress, total, every = (
            self.progress,
            self.run.plan.total_steps,
            self.run.cfg.checkpoint_every,
        )
        # On the device: adding the loss to a host number would wait for every step.
        loss_sum = torch.tensor(progress.loss_sum, dtype=torch.float64, device=self.run.device)
        batches = iter(self.run.batches)
        for _ in range(skip):  # a resumed epoch: the batches already taken
            next(batches)
        checkpoint_due = False
        for batch in range(skip, epoch_steps):
            if progress.step >= total:
                break
            x, y, index = self.to_device(next(batches))
            for select in self.selectors:
                x, y, index = select(x, y, index)
            weights = self.weigh(index) if self.weigh is not None else None
            loss_sum += self.step(x, y, index, progress.step + 1, weights).double() * len(y)
            progress.seen += len(y)
            progress.examples += len(y)
            progress.step += 1
            self.bar.update()
            more = batch + 1 < epoch_steps and progress.step < total  # else: after evaluation
            due = bool(every) and progress.step % every == 0
            halt = self.agree(stop) if more else None
            checkpoint_due = checkpoint_due or (due and not more)
            # SIGINT/SIGTERM: a resume point here, at a step boundary.
            if more and (due or halt):
                self.train_clock.stop()
                progress.loss_sum = float(loss_sum)
                self.save_resume(epoch, batch + 1)
                if halt:
                    raise self.interrupted(halt)
                self.train_clock.start()
        progress.loss_sum = float(loss_sum)
        return checkpoint_due

    def evaluate(self, epoch: int) -> None:
        """Test loss and accuracy on the eval clock; a line in the log and the curve."""
        run, progress, world = self.run, self.progress, self.world
        with self.eval_clock.running():
            test_loss, test_acc = evaluate(run.model, run.x_test, run.y_test, run.cfg.batch_size)
        # Each rank evaluated its share of the test set; the clock is the slowest rank's.
        n = len(run.y_test)
        loss_sum, correct, tested, loss_seen, seen = world.reduce(
            [test_loss * n, test_acc * n, n, progress.loss_sum, progress.seen]
        )
        if world.distributed:
            test_loss, test_acc = loss_sum / tested, correct / tested
        train_seconds, eval_seconds = world.reduce(
            [self.train_clock.seconds, self.eval_clock.seconds], "max"
        )
        progress.curve.append((train_seconds, test_acc))
        line = {
            "epoch": epoch + 1,
            "step": progress.step,
            "train_seconds": round(train_seconds, 4),
            "eval_seconds": round(eval_seconds, 4),
            "train_loss": loss_seen / max(seen, 1),
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": self.scheduler.get_last_lr()[0],
        }
        progress.lines.append(line)
        if self.log is not None:
            self.log.write(json.dumps(line) + "\n")
            self.log.flush()
        self.bar.evaluated(test_acc)
        for algorithm in self.after_evals:
            algorithm.after_eval(epoch, line)

    def count(self) -> None:
        """The progress's clocks and selection counts, as of now."""
        progress, (selection, scored, compiled) = self.progress, self.before
        progress.train_seconds = self.train_clock.seconds
        progress.eval_seconds = self.eval_clock.seconds  # each rank's own (resumed as such)
        if self.compile_timer is not None:
            progress.compile_seconds = compiled + self.compile_timer.seconds
        progress.selection_seconds = selection + sum(a.selection_seconds for a in self.algorithms)
        progress.scored = scored + sum(a.scored for a in self.algorithms)

    def agree(self, stop: StopRequest) -> int | None:
        """The signal to stop for at this step boundary (None: go on).

        On several processes, the largest any rank had received when it got here, so all
        stop at the same step. The request itself is only read: a signal whose handler
        runs while the ranks agree (a process waiting in the all-reduce runs it as the
        call returns) stays recorded for the next boundary; writing the agreed value
        back would erase it, and the run would never stop."""
        if not self.world.distributed:
            return stop.signum
        seen = stop.signum or 0
        return int(self.world.reduce([seen], "max")[0]) or None

    def save_resume(self, epoch: int, batch: int) -> None:
        if self.run.run_dir is None:
            return
        self.progress.epoch, self.progress.batch = epoch, batch
        self.count()
        state = self.state.state_dict(self.run.config_hash)
        if self.world.distributed:
            # Weights and optimizer are the same on every rank; the rest is each rank's.
            own = {key: state[key] for key in RANK_KEYS}
            ranks = self.world.gather(own)
            if ranks is not None:
                state["ranks"] = ranks
        if self.world.writes:
            save_checkpoint(self.run.run_dir / RESUME_NAME, state)

    def interrupted(self, signum: int) -> Interrupted:
        step = self.progress.step
        if self.run.run_dir is None:
            return Interrupted(signum, f"stopped at step {step}, nothing saved")
        return Interrupted(
            signum,
            f"resume point at step {step} of {self.run.plan.total_steps} written to "
            f"{str(self.run.run_dir / RESUME_NAME)!r}",
        )

    def summary(self) -> dict[str, Any]:
        """The run's part of summary.json; each algorithm then adds its own."""
        self.count()
        run, progress, cfg = self.run, self.progress, self.run.cfg
        # Counts over all ranks; the clocks are the slowest rank's.
        examples, scored = self.world.reduce([progress.examples, progress.scored])
        train_seconds, eval_seconds, selection_seconds = self.world.reduce(
            [progress.train_seconds, progress.eval_seconds, progress.selection_seconds], "max"
        )
        ran = paths_taken()
        accuracies = [acc for _, acc in progress.curve]
        summary: dict[str, Any] = {
            "final_test_acc": accuracies[-1],
            "best_test_acc": max(accuracies),
            "final_test_loss": progress.lines[-1]["test_loss"],
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "compile_seconds": progress.compile_seconds if self.compile_timer else None,
            "epochs": run.plan.epochs,
            "steps": progress.step,
            "steps_per_epoch": run.plan.steps_per_epoch,
            "warmup_steps": run.plan.warmup_steps,
            "targets": run.targets,
            "time_to_accuracy": time_to_accuracy(progress.curve, run.targets),
            "resumed_from_step": self.resumed_from,
            "sparsity": None,
            # What each kernel ran (Triton or its torch reference) and why, as recorded by
            # the kernels themselves; the algorithms fill in theirs (KD, masks).
            "kernels": {
                "kd_loss": None,
                "optimizer": optimizer_path(self.optimizer, ran),
                "masks": None,
                "paths": ran,
            },
            "cost": cost_summary(
                trained=int(examples),
                scored=int(scored),
                full_data=full_data_examples(
                    run.dataset.num_train, run.plan.epochs, cfg.steps, cfg.batch_size
                ),
                selection_seconds=selection_seconds,
            ),
        }
        for algorithm in self.algorithms:
            algorithm.summarize(summary)
        return summary


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
