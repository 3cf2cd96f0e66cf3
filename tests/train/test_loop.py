import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from runs_helper import SUMMARY_KEYS

from datapruning.config import KDConfig, ModelConfig, TrainConfig
from datapruning.data.sources import load_dataset
from datapruning.errors import DataPruningError, FingerprintMismatchError
from datapruning.train.checkpoint import load_checkpoint, load_model, save_checkpoint
from datapruning.train.evaluation import evaluate, predict
from datapruning.train.loop import train

MLP = ModelConfig(name="mlp", params={"hidden": 64})


def cfg(**overrides):
    base = {"epochs": 2, "batch_size": 32, "lr": 0.1, "seed": 0, "targets": [0.5, 0.8, 0.999]}
    return TrainConfig(**{**base, **overrides})


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def accuracy(model, dataset):
    logits = predict(model, torch.as_tensor(dataset.x_test))
    return (logits.argmax(1).numpy() == dataset.y_test).mean()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def full_run(digits, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full")
    return train(digits, MLP, cfg(epochs=5), run_dir=run_dir, progress=False)


def test_full_run_learns_digits(full_run, digits):
    summary = full_run.summary
    assert summary["final_test_acc"] > 0.85
    # The reported accuracy is the model's accuracy on the test split.
    assert summary["final_test_acc"] == pytest.approx(accuracy(full_run.model, digits), abs=1e-6)
    assert summary["epochs"] == 5
    assert summary["steps"] == 5 * math.ceil(1347 / 32)
    assert summary["kept_fraction"] == 1.0
    assert summary["num_train_examples"] == 1347
    assert summary["train_seconds"] > 0
    assert summary["eval_seconds"] > 0
    assert summary["dataset"]["fingerprint"] == digits.fingerprint
    assert summary["kd"] is None


def test_run_dir_files(full_run):
    run_dir = full_run.run_dir
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.pt",
        "metrics.jsonl",
        "summary.json",
    ]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["final_test_acc"] == full_run.summary["final_test_acc"]
    assert summary["config"]["train"]["epochs"] == 5
    assert summary["config"]["model"] == {"name": "mlp", "params": {"hidden": 64}}

    lines = read_metrics(run_dir)
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    assert [line["step"] for line in lines] == [43, 86, 129, 172, 215]
    assert lines[-1]["test_acc"] == summary["final_test_acc"]
    assert max(line["test_acc"] for line in lines) == summary["best_test_acc"]
    seconds = [line["train_seconds"] for line in lines]
    assert seconds == sorted(seconds)
    assert seconds[-1] == pytest.approx(summary["train_seconds"], abs=1e-3)
    # Training improves the loss.
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    # Time to each target: training seconds at the first evaluation reaching it.
    for key, target in (("0.5", 0.5), ("0.8", 0.8), ("0.999", 0.999)):
        first = next((line["train_seconds"] for line in lines if line["test_acc"] >= target), None)
        got = summary["time_to_accuracy"][key]
        if first is None:
            assert got is None
        else:
            assert got == pytest.approx(first, abs=1e-3)
    assert summary["time_to_accuracy"]["0.8"] is not None


def test_lr_ends_near_zero(full_run):
    lines = read_metrics(full_run.run_dir)
    assert lines[-1]["lr"] < 1e-6
    assert lines[0]["lr"] > 0.08


def test_checkpoint_rebuilds_the_model(full_run, digits):
    state = load_checkpoint(full_run.run_dir)
    assert state["model"] == "mlp"
    assert state["dataset_fingerprint"] == digits.fingerprint
    assert state["steps"] == full_run.summary["steps"]
    model = load_model(full_run.run_dir / "checkpoint.pt", fingerprint=digits.fingerprint)
    x = torch.as_tensor(digits.x_test)
    assert torch.equal(predict(model, x), predict(full_run.model, x))
    loss, acc = evaluate(model, x, torch.as_tensor(digits.y_test))
    assert acc == pytest.approx(full_run.summary["final_test_acc"])
    assert loss == pytest.approx(full_run.summary["final_test_loss"], rel=1e-5)


def test_checkpoint_errors(tmp_path, full_run, digits):
    with pytest.raises(DataPruningError, match="not found"):
        load_checkpoint(tmp_path / "nothing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DataPruningError, match="cannot be read"):
        load_checkpoint(garbage)
    other = save_checkpoint(tmp_path / "other.pt", {"weights": torch.zeros(2)})
    with pytest.raises(DataPruningError, match="not a datapruning checkpoint"):
        load_checkpoint(other)
    with pytest.raises(FingerprintMismatchError):
        load_model(full_run.run_dir, fingerprint="0" * 16)
    with pytest.raises(DataPruningError, match="classes"):
        load_model(full_run.run_dir, num_classes=3)


def test_subset_steps_kept_fraction_and_cosine_lr(digits, tmp_path):
    indices = np.arange(0, digits.num_train, 3)  # 449 examples
    epochs, batch_size = 3, 64
    result = train(
        digits,
        MLP,
        cfg(epochs=epochs, batch_size=batch_size, warmup_epochs=0),  # the cosine alone
        indices=indices,
        run_dir=tmp_path,
    )
    per_epoch = math.ceil(len(indices) / batch_size)
    total = per_epoch * epochs
    assert result.summary["steps"] == total
    assert result.summary["kept_fraction"] == pytest.approx(len(indices) / digits.num_train)
    assert result.summary["num_train_examples"] == len(indices)
    lines = read_metrics(tmp_path)
    assert [line["step"] for line in lines] == [per_epoch * (e + 1) for e in range(epochs)]
    # Cosine over the steps this run takes (not over the full data's steps).
    for line in lines:
        want = 0.1 * 0.5 * (1 + math.cos(math.pi * line["step"] / total))
        assert line["lr"] == pytest.approx(want, abs=1e-9)
    assert lines[-1]["lr"] < 1e-9


def test_trains_only_on_the_given_indices(digits):
    # Train on classes 0-4 only: the model then never predicts 5-9.
    indices = np.flatnonzero(digits.y_train < 5)
    result = train(digits, MLP, cfg(epochs=3), indices=indices)
    predictions = predict(result.model, torch.as_tensor(digits.x_test)).argmax(1)
    assert predictions.max().item() <= 4
    assert result.summary["final_test_acc"] < 0.6


def test_bad_indices_are_refused(digits):
    with pytest.raises(DataPruningError, match="lie in"):
        train(digits, MLP, cfg(), indices=[0, digits.num_train])
    with pytest.raises(DataPruningError, match="duplicates"):
        train(digits, MLP, cfg(), indices=[0, 0])


def test_same_seed_same_weights_and_global_rng_untouched(digits):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    first = train(digits, MLP, cfg(seed=3))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    torch.manual_seed(999)  # a different caller state does not matter
    second = train(digits, MLP, cfg(seed=3))
    assert same_weights(first.model, second.model)
    assert first.summary["final_test_acc"] == second.summary["final_test_acc"]
    third = train(digits, MLP, cfg(seed=4))
    assert not same_weights(first.model, third.model)


def test_torch_loader_matches_memory_loader(digits):
    memory = train(digits, MLP, cfg(loader="memory", seed=5))
    loader = train(digits, MLP, cfg(loader="torch", seed=5))
    assert same_weights(memory.model, loader.model)
    assert memory.summary["final_test_acc"] == loader.summary["final_test_acc"]
    assert memory.summary["steps"] == loader.summary["steps"]


def test_eval_every(digits, tmp_path):
    train(digits, MLP, cfg(epochs=3, eval_every=0), run_dir=tmp_path / "zero")
    lines = read_metrics(tmp_path / "zero")
    assert len(lines) == 1
    assert lines[0]["epoch"] == 3
    train(digits, MLP, cfg(epochs=5, eval_every=2), run_dir=tmp_path / "two")
    assert [line["epoch"] for line in read_metrics(tmp_path / "two")] == [2, 4, 5]


def test_kd_from_teacher_checkpoint(digits, full_run, tmp_path):
    kd = KDConfig(alpha=0.5, temperature=4.0)
    student = train(
        digits, MLP, cfg(epochs=3, seed=1), teacher=full_run.run_dir, kd=kd, run_dir=tmp_path
    )
    assert student.summary["kd"]["alpha"] == 0.5
    assert student.summary["kd"]["temperature"] == 4.0
    assert json.loads((tmp_path / "summary.json").read_text())["kd"] == student.summary["kd"]
    assert student.summary["final_test_acc"] > 0.85
    plain = train(digits, MLP, cfg(epochs=3, seed=1))
    assert not same_weights(student.model, plain.model)
    # A teacher given as a module gives the same run as its checkpoint.
    from_module = train(digits, MLP, cfg(epochs=3, seed=1), teacher=full_run.model, kd=kd)
    assert same_weights(student.model, from_module.model)
    # alpha = 0 is plain cross-entropy training.
    no_kd = train(
        digits, MLP, cfg(epochs=3, seed=1), teacher=full_run.run_dir, kd=KDConfig(alpha=0.0)
    )
    assert same_weights(no_kd.model, plain.model)


def test_kd_refuses_a_teacher_from_another_dataset(digits, tmp_path):
    other = load_dataset("digits", {"seed": 1})  # another split: another fingerprint
    assert other.fingerprint != digits.fingerprint
    train(other, MLP, cfg(epochs=1), run_dir=tmp_path / "teacher")
    with pytest.raises(FingerprintMismatchError):
        train(digits, MLP, cfg(epochs=1), teacher=tmp_path / "teacher", kd=KDConfig())


def test_default_model_comes_from_the_dataset(digits):
    small = replace(digits, x_train=digits.x_train[:200], y_train=digits.y_train[:200])
    result = train(small, ModelConfig(), cfg(epochs=1))
    assert result.summary["model"] == "mlp"
    assert result.summary["steps"] == math.ceil(200 / 32)
    assert result.run_dir is None


def test_wrong_teacher_fails_before_the_run_dir_is_touched(digits, full_run, tmp_path):
    other = replace(digits, x_train=digits.x_train + 1.0)  # same shapes, other fingerprint
    with pytest.raises(FingerprintMismatchError):
        train(other, MLP, cfg(epochs=1), teacher=full_run.run_dir, run_dir=tmp_path / "student")
    assert not (tmp_path / "student").exists()


def test_rerun_that_fails_leaves_no_stale_summary(digits, tmp_path, monkeypatch):
    train(digits, MLP, cfg(epochs=1), run_dir=tmp_path)
    assert (tmp_path / "summary.json").exists()

    def broken(*args, **kwargs):
        raise RuntimeError("killed mid-run")

    monkeypatch.setattr("datapruning.train.loop.evaluate", broken)
    with pytest.raises(RuntimeError):
        train(digits, MLP, cfg(epochs=1), run_dir=tmp_path)
    # Without summary.json the report does not mistake the half-written run for a finished one.
    assert not (tmp_path / "summary.json").exists()
