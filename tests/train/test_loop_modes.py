"""Data modes, step budget, warm-up, KD teachers, relative targets and resume of the loop."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from weights_helper import assert_same_weights

from datapruning._io import write_npy
from datapruning.config import (
    DataConfig,
    KDConfig,
    ModelConfig,
    TrainConfig,
    load_config,
    sparsity_config,
)
from datapruning.data.samplers import RS2Sampler
from datapruning.data.sources import load_dataset
from datapruning.errors import DataPruningError
from datapruning.scores import Scores
from datapruning.train.checkpoint import load_checkpoint, save_checkpoint
from datapruning.train.kd import auto_alpha
from datapruning.train.loop import RESUME_NAME, train
from datapruning.train.schedule import warmup_steps

MLP = ModelConfig(name="mlp", params={"hidden": 32})


def cfg(**overrides):
    base = {"epochs": 3, "batch_size": 64, "lr": 0.1, "seed": 0, "targets": [0.5]}
    return TrainConfig(**{**base, **overrides})


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def teacher_run(digits, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher")
    return train(digits, MLP, cfg(epochs=4), run_dir=run_dir, progress=False)


# --- data modes ---------------------------------------------------------------------------


def test_rs2_trains_on_a_fresh_fraction_each_epoch(digits, tmp_path, monkeypatch):
    seen: list[np.ndarray] = []
    original = RS2Sampler.rank_indices

    def record(self):
        indices = original(self)
        seen.append(indices)
        return indices

    monkeypatch.setattr(RS2Sampler, "rank_indices", record)
    data = DataConfig(mode="rs2", fraction=0.1)
    result = train(digits, MLP, cfg(epochs=4, data=data, warmup_epochs=0), run_dir=tmp_path)
    per_epoch = math.ceil(0.1 * digits.num_train)
    steps_per_epoch = math.ceil(per_epoch / 64)
    summary = result.summary
    assert summary["data_mode"] == "rs2"
    assert summary["kept_fraction"] == 0.1
    assert summary["num_train_examples"] == per_epoch
    assert summary["steps"] == 4 * steps_per_epoch
    assert len(seen) == 4
    # Without replacement the epochs walk one permutation: disjoint subsets.
    assert len(np.unique(np.concatenate(seen))) == 4 * per_epoch
    # The cosine is built on the steps RS2 takes, not on full-data epochs.
    lines = read_metrics(tmp_path)
    assert [line["step"] for line in lines] == [steps_per_epoch * (e + 1) for e in range(4)]
    assert lines[-1]["lr"] < 1e-9
    half = lines[1]
    assert half["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)), abs=1e-9)


def test_rs2_with_replacement_and_stratified(digits):
    common = {"mode": "rs2", "fraction": 0.2}
    plain = train(digits, MLP, cfg(epochs=2, data=DataConfig(**common)))
    drawn = train(digits, MLP, cfg(epochs=2, data=DataConfig(**common, replacement=True)))
    stratified = train(digits, MLP, cfg(epochs=2, data=DataConfig(**common, stratify=True)))
    assert plain.summary["steps"] == drawn.summary["steps"] == stratified.summary["steps"]
    assert not torch.equal(plain.model.state_dict()["net.1.weight"], drawn.model.net[1].weight)
    assert not torch.equal(plain.model.state_dict()["net.1.weight"], stratified.model.net[1].weight)


def test_subset_from_scores_carries_the_scoring_seconds(digits, tmp_path):
    rng = np.random.default_rng(0)
    scores = Scores(
        __import__("pandas").DataFrame(
            {
                "index": np.arange(digits.num_train),
                "score": rng.random(digits.num_train),
                "label": digits.y_train,
            }
        ),
        {"metric": "test", "seconds": 12.5, "dataset": {"fingerprint": digits.fingerprint}},
    )
    path = scores.save(tmp_path / "scores.parquet")
    data = DataConfig(mode="subset", scores=path, keep=0.25, strategy="hard")
    result = train(digits, MLP, cfg(epochs=1, data=data))
    assert result.summary["data_mode"] == "subset"
    assert result.summary["num_train_examples"] == len(scores.select(0.25, "hard"))
    assert result.summary["scoring_seconds"] == 12.5
    assert result.summary["end_to_end_seconds"] == pytest.approx(
        result.summary["train_seconds"] + 12.5
    )
    # The same subset given as indices trains the same model.
    write_npy(tmp_path / "idx.npy", scores.select(0.25, "hard"))
    by_file = train(
        digits, MLP, cfg(epochs=1, data=DataConfig(mode="subset", indices=tmp_path / "idx.npy"))
    )
    assert_same_weights(result.model, by_file.model)
    with pytest.raises(DataPruningError, match="indices were given"):
        train(digits, MLP, cfg(epochs=1, data=data), indices=np.arange(10))


# --- step budget and warm-up --------------------------------------------------------------


def test_step_budget_fixes_the_steps_and_anneals_over_them(digits, tmp_path):
    per_epoch = math.ceil(digits.num_train / 64)  # 22
    result = train(digits, MLP, cfg(epochs=99, steps=50, warmup_epochs=0), run_dir=tmp_path)
    assert result.summary["steps"] == 50
    assert result.summary["epochs"] == math.ceil(50 / per_epoch)
    lines = read_metrics(tmp_path)
    assert [line["step"] for line in lines] == [per_epoch, 2 * per_epoch, 50]
    assert lines[-1]["lr"] < 1e-9
    want = 0.1 * 0.5 * (1 + math.cos(math.pi * per_epoch / 50))
    assert lines[0]["lr"] == pytest.approx(want, abs=1e-9)


def test_warmup_rises_linearly_then_cosine(digits, tmp_path):
    per_epoch = math.ceil(digits.num_train / 64)
    result = train(digits, MLP, cfg(epochs=3, warmup_epochs=1), run_dir=tmp_path)
    assert result.summary["warmup_steps"] == per_epoch
    lines = read_metrics(tmp_path)
    # After the warm-up epoch the LR is at its peak and the cosine starts from there.
    assert lines[0]["lr"] == pytest.approx(0.1, abs=1e-12)
    assert lines[1]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 2)), abs=1e-9)


def test_step_budget_within_the_warmup_is_refused_before_touching_the_run_dir(digits, tmp_path):
    with pytest.raises(DataPruningError, match="warm-up"):
        train(digits, MLP, cfg(steps=10, warmup_epochs=1), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_default_warmup_is_one_epoch_at_most_a_tenth_of_the_run(digits, tmp_path):
    # auto: one epoch of the run's own steps, but never more than a tenth of its steps.
    assert TrainConfig().warmup_epochs == "auto"
    per_epoch = math.ceil(digits.num_train / 64)  # 22
    long = train(digits, MLP, cfg(epochs=12), run_dir=tmp_path / "long")
    assert long.summary["warmup_steps"] == per_epoch
    lines = read_metrics(tmp_path / "long")
    total = 12 * per_epoch
    want = 0.1 * 0.5 * (1 + math.cos(math.pi * (2 * per_epoch - per_epoch) / (total - per_epoch)))
    assert lines[1]["lr"] == pytest.approx(want, abs=1e-9)  # the cosine after the warm-up
    short = train(digits, MLP, cfg(epochs=3), run_dir=tmp_path / "short")
    assert short.summary["warmup_steps"] == 3 * per_epoch // 10
    # A budget shorter than an epoch trains (no refusal), with a warm-up of a tenth of it.
    tiny = train(digits, MLP, cfg(steps=5), run_dir=tmp_path / "tiny")
    assert tiny.summary["steps"] == 5
    assert tiny.summary["warmup_steps"] == 0
    assert TrainConfig(warmup_epochs=0).warmup_epochs == 0


def test_default_clips_every_step_to_a_gradient_norm_of_5(digits, tmp_path, monkeypatch):
    # KD at lr 0.05-0.1 needs it besides the warm-up (bench/results/kd_stability.json);
    # every run gets it, the full-data reference included. null turns it off.
    assert TrainConfig().clip_grad_norm == 5.0
    seen = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        before = original(params, max_norm, *args, **kwargs)
        after = torch.sqrt(sum(p.grad.pow(2).sum() for p in params))
        seen.append((max_norm, float(before), float(after)))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    result = train(digits, MLP, cfg(epochs=1, lr=2.0), run_dir=tmp_path / "default")
    assert len(seen) == result.summary["steps"]
    assert all(max_norm == 5.0 and after <= 5.0 + 1e-4 for max_norm, _, after in seen)
    assert any(before > 5.0 for _, before, _ in seen)  # lr 2 makes it clip some steps
    seen.clear()
    train(digits, MLP, cfg(epochs=1, clip_grad_norm=None), run_dir=tmp_path / "off")
    assert seen == []


def test_plan_steps_auto_warmup():
    assert warmup_steps("auto", 200, 6000) == 200
    assert warmup_steps("auto", 200, 1800) == 180
    assert warmup_steps("auto", 60, 1800) == 60
    assert warmup_steps("auto", 14, 3) == 0
    assert warmup_steps(1.5, 200, 6000) == 300
    assert warmup_steps(0, 200, 6000) == 0
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=-0.5)


# --- knowledge distillation ---------------------------------------------------------------


def test_auto_alpha_follows_the_kept_fraction(digits, teacher_run):
    indices = np.arange(0, digits.num_train, 4)
    kd = KDConfig(alpha="auto", temperature=2.0)
    result = train(digits, MLP, cfg(epochs=1), indices=indices, teacher=teacher_run.model, kd=kd)
    assert result.summary["kd"]["alpha"] == auto_alpha(len(indices) / digits.num_train)
    assert result.summary["kd"]["alpha_rule"] == "auto"
    # The rule never gives less weight to the teacher when less data is kept.
    fractions = np.linspace(0.01, 1, 50)
    alphas = [auto_alpha(f) for f in fractions]
    assert all(0 <= a <= 1 for a in alphas)
    assert all(a >= b for a, b in itertools.pairwise(alphas))
    with pytest.raises(DataPruningError):
        auto_alpha(0.0)


def test_teacher_logits_are_cached_beside_the_checkpoint(digits, teacher_run, tmp_path):
    kd = KDConfig(alpha=0.5, temperature=2.0)
    run_dir = teacher_run.run_dir
    for cached in run_dir.glob("teacher_logits-*.npy"):
        cached.unlink()
    first = train(digits, MLP, cfg(epochs=1, seed=1), teacher=run_dir, kd=kd)
    caches = list(run_dir.glob("teacher_logits-*.npy"))
    assert len(caches) == 1
    assert digits.fingerprint.replace(":", "-") in caches[0].name
    assert first.summary["kd"]["cached_logits"] is False
    assert first.summary["teacher_logits_seconds"] > 0
    second = train(digits, MLP, cfg(epochs=1, seed=1), teacher=run_dir, kd=kd)
    assert second.summary["kd"]["cached_logits"] is True
    assert second.summary["teacher_logits_seconds"] == 0
    assert_same_weights(first.model, second.model)
    # A cache of another checkpoint is not used: its name holds the checkpoint's hash.
    np.save(caches[0], np.zeros((digits.num_train, digits.num_classes), np.float32))
    save_checkpoint(run_dir / "checkpoint.pt", load_checkpoint(run_dir) | {"steps": -1})
    third = train(digits, MLP, cfg(epochs=1, seed=1), teacher=run_dir, kd=kd)
    assert third.summary["kd"]["cached_logits"] is False
    assert_same_weights(first.model, third.model)
    # Precomputed logits given directly as .npy.
    npy = tmp_path / "logits.npy"
    with torch.no_grad():
        np.save(npy, teacher_run.model(torch.as_tensor(digits.x_train)).numpy())
    from_file = train(
        digits, MLP, cfg(epochs=1, seed=1), kd=kd.model_copy(update={"teacher_logits": npy})
    )
    assert from_file.summary["kd"]["teacher"] == str(npy)
    assert from_file.summary["kd"]["alpha"] == 0.5


def test_teacher_of_another_architecture(digits, tmp_path):
    conv = ModelConfig(name="convnet1d", params={"channels": 8})
    teacher = train(digits, conv, cfg(epochs=2), run_dir=tmp_path / "conv")
    student = train(digits, MLP, cfg(epochs=1), teacher=tmp_path / "conv", kd=KDConfig())
    assert student.summary["model"] == "mlp"
    assert student.summary["kd"] is not None
    plain = train(digits, MLP, cfg(epochs=1))
    assert not torch.equal(student.model.net[1].weight, plain.model.net[1].weight)
    assert teacher.summary["model"] == "convnet1d"


def test_teacher_with_another_number_of_classes_is_refused(digits, teacher_run, tmp_path):
    state = load_checkpoint(teacher_run.run_dir)
    from datapruning.models import build_model

    three = build_model("mlp", digits.input_shape, 3, hidden=32)
    save_checkpoint(
        tmp_path / "three.pt", state | {"num_classes": 3, "state_dict": three.state_dict()}
    )
    with pytest.raises(DataPruningError, match="3 classes"):
        train(digits, MLP, cfg(), teacher=tmp_path / "three.pt", run_dir=tmp_path / "run")
    np.save(tmp_path / "three.npy", np.zeros((digits.num_train, 3), np.float32))
    with pytest.raises(DataPruningError, match="shape"):
        train(digits, MLP, cfg(), teacher=tmp_path / "three.npy", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --- targets ------------------------------------------------------------------------------


def test_relative_targets_scale_with_the_reference_run(digits, teacher_run, tmp_path):
    ref_acc = teacher_run.summary["final_test_acc"]
    result = train(
        digits,
        MLP,
        cfg(epochs=3, targets=[0.5, "0.9r", "1.0r"], reference=teacher_run.run_dir),
        run_dir=tmp_path,
    )
    summary = result.summary
    assert summary["reference_acc"] == ref_acc
    assert summary["targets"] == {"0.5": 0.5, "0.9r": 0.9 * ref_acc, "1r": ref_acc}
    lines = read_metrics(tmp_path)
    first = next(
        (line["train_seconds"] for line in lines if line["test_acc"] >= 0.9 * ref_acc), None
    )
    assert summary["time_to_accuracy"]["0.9r"] == pytest.approx(first, abs=1e-3)
    with pytest.raises(DataPruningError, match="not a finished run"):
        train(digits, MLP, cfg(targets=["0.9r"], reference=tmp_path / "missing"))


# --- resume -------------------------------------------------------------------------------


class Crash(Exception):
    pass


GLOBAL_80 = sparsity_config(target=0.8, scope="global", start=0.1, end=0.7, every=5)
TWO_FOUR = sparsity_config(scope="nm", n=2, m=4, start=0.2)
REWIND = sparsity_config(target=0.8, start=0.1, end=0.7, every=5, rewind=10)


def crash_on_evaluation(monkeypatch, after):
    """Make the loop's evaluate raise on its ``after``-th call, like a kill mid-run."""
    import datapruning.train.loop as loop

    calls = {"n": 0}
    real = loop.evaluate

    def evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= after:
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", evaluate)


@pytest.mark.parametrize(
    ("overrides", "crash_at"),
    [
        ({"checkpoint_every": 7}, 2),  # mid-epoch checkpoints
        ({"checkpoint_every": 22}, 2),  # at an epoch's end, after its evaluation
        ({"checkpoint_every": 9, "data": DataConfig(mode="rs2", fraction=0.3), "steps": 40}, 3),
        # Masks and schedule position resume too: the crash falls between mask updates.
        ({"checkpoint_every": 7, "sparsity": GLOBAL_80}, 3),
        ({"checkpoint_every": 7, "sparsity": TWO_FOUR}, 2),
        # The crash falls after the rewind point and before the final masks restore it.
        ({"checkpoint_every": 7, "sparsity": REWIND}, 2),
    ],
    ids=["mid-epoch", "epoch-end", "rs2-budget", "gmp", "2:4", "gmp-rewind"],
)
def test_resume_after_a_crash_ends_with_the_same_weights(
    digits, teacher_run, tmp_path, monkeypatch, overrides, crash_at
):
    train_cfg = cfg(epochs=4, deterministic=True, **overrides)
    kd = KDConfig(alpha=0.5, temperature=2.0)
    whole = train(digits, MLP, train_cfg, teacher=teacher_run.model, kd=kd, run_dir=tmp_path / "a")
    assert not (tmp_path / "a" / RESUME_NAME).exists()  # a finished run keeps no resume state

    with monkeypatch.context() as patch:
        crash_on_evaluation(patch, after=crash_at)
        with pytest.raises(Crash):
            train(digits, MLP, train_cfg, teacher=teacher_run.model, kd=kd, run_dir=tmp_path / "b")
    assert (tmp_path / "b" / RESUME_NAME).exists()
    assert not (tmp_path / "b" / "summary.json").exists()
    resumed = train(
        digits, MLP, train_cfg, teacher=teacher_run.model, kd=kd, run_dir=tmp_path / "b"
    )
    assert resumed.summary["resumed_from_step"] > 0
    assert_same_weights(whole.model, resumed.model)
    keys = ("epoch", "step", "test_acc", "test_loss", "train_loss", "lr")
    assert [[line[k] for k in keys] for line in read_metrics(tmp_path / "b")] == [
        [line[k] for k in keys] for line in read_metrics(tmp_path / "a")
    ]
    assert not (tmp_path / "b" / RESUME_NAME).exists()
    if train_cfg.sparsity.enabled:
        assert resumed.summary["sparsity"] == whole.summary["sparsity"]
        assert resumed.summary["sparsity"]["sparsity"] > 0.3
        assert_same_weights(whole.model, resumed.model)
        assert load_checkpoint(tmp_path / "a")["state_dict"].keys() == (
            load_checkpoint(tmp_path / "b")["state_dict"].keys()
        )


def test_resume_checkpoint_from_another_config_is_refused_and_kept(digits, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        crash_on_evaluation(patch, after=2)
        with pytest.raises(Crash):
            train(digits, MLP, cfg(checkpoint_every=5), run_dir=run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(DataPruningError, match="different config"):
        train(digits, MLP, cfg(checkpoint_every=5, lr=0.2), run_dir=run_dir)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    # Settings that do not change the computation (the checkpoint interval) may differ.
    resumed = train(digits, MLP, cfg(checkpoint_every=11), run_dir=run_dir)
    assert resumed.summary["resumed_from_step"] == 40


KILL_CONFIG = """\
dataset:
  name: digits
model:
  name: mlp
  params:
    hidden: 64
train:
  epochs: 10
  batch_size: 32
  lr: 0.1
  checkpoint_every: 50
  deterministic: true
  targets: [0.9]
  sparsity:
    target: 0.8
    scope: global
    start: 10   # masks already prune weights at the first resume checkpoint (step 50)
    every: 20
"""


@pytest.mark.slow
def test_sigkill_mid_training_then_the_same_command_ends_bit_exact(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "kill.yaml"
    config.write_text(KILL_CONFIG)

    def command(out):
        return [sys.executable, "-m", "datapruning.cli", "train", str(config), "--out", str(out)]

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # Kill once a resume checkpoint exists and an evaluation has been logged.
    while time.monotonic() < deadline and process.poll() is None:
        metrics = killed / "metrics.jsonl"
        if (killed / RESUME_NAME).exists() and metrics.exists() and metrics.read_text().strip():
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    assert (killed / RESUME_NAME).exists()

    subprocess.run(command(killed), check=True, capture_output=True)
    # The uninterrupted run: what the same command computes, in this process.
    whole = tmp_path / "whole"
    loaded = load_config(config)
    train(load_dataset("digits"), loaded.model, loaded.train, run_dir=whole, progress=False)
    resumed_state = load_checkpoint(killed)["state_dict"]
    whole_state = load_checkpoint(whole)["state_dict"]
    assert resumed_state.keys() == whole_state.keys()
    for key in whole_state:
        assert torch.equal(resumed_state[key], whole_state[key]), key
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed_from_step"] > 0
    whole_summary = json.loads((whole / "summary.json").read_text())
    assert summary["steps"] == whole_summary["steps"]
    assert summary["sparsity"] == whole_summary["sparsity"]
    assert summary["sparsity"]["sparsity"] == pytest.approx(0.8, abs=0.005)
