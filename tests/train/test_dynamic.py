"""Dynamic data in the loop: InfoBatch (with KD and sparsity), online selection, their cost."""

import copy
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from datapruning.config import (
    DataConfig,
    KDConfig,
    ModelConfig,
    TrainConfig,
    sparsity_config,
)
from datapruning.data.sources import load_dataset
from datapruning.errors import DataPruningError
from datapruning.models import build_model
from datapruning.train.dynamic import OnlineSelection, ProxySelection
from datapruning.train.loop import RESUME_NAME, train
from datapruning.train.schedule import DynamicStepPlan

MLP = ModelConfig(name="mlp", params={"hidden": 32})
KD = KDConfig(alpha=0.5, temperature=2.0)
INFOBATCH = DataConfig(mode="infobatch", prune=0.5, anneal=0.25)
# end=1.0: the final masks fall on the run's very last step, wherever the pruned epochs put it.
GMP = sparsity_config(target=0.8, scope="global", start=0.1, end=1.0, every=5)


def cfg(**overrides):
    base = {"epochs": 4, "batch_size": 64, "lr": 0.1, "seed": 0, "targets": [0.5]}
    return TrainConfig(**{**base, **overrides})


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def teacher(digits):
    return train(digits, MLP, cfg(epochs=3), progress=False).model


def test_plan_schedules_end_where_they_should_whatever_the_epoch_lengths():
    lengths = [10, 4, 7, 1, 10]  # full, pruned..., full: as InfoBatch's epochs come out
    plan = DynamicStepPlan(10, 50, 5, 3, epoch_steps=lambda e: lengths[e])
    reached, factors, step = [], [], 0
    for epoch, steps in enumerate(lengths):
        assert plan.steps_in_epoch(epoch) == steps
        plan.begin_epoch(epoch, step, steps)
        for _ in range(steps):
            factors.append(plan.lr_factor(step))
            step += 1
            reached.extend(plan.schedule_steps(step))
    assert reached == list(range(1, 51))  # every nominal step once, in order, the last one last
    assert plan.nominal(step) == 50
    assert plan.lr_factor(step) == 0.0  # the cosine has ended
    assert factors[:3] == [1 / 3, 2 / 3, 1.0]  # warm-up over full epoch 0 as planned
    assert all(a >= b for a, b in itertools.pairwise(factors[2:]))


def test_infobatch_with_kd_and_sparsity_ends_its_schedules(digits, teacher, tmp_path):
    result = train(
        digits, MLP, cfg(data=INFOBATCH, sparsity=GMP), teacher=teacher, kd=KD,
        run_dir=tmp_path, progress=False,
    )  # fmt: skip
    summary, n = result.summary, digits.num_train
    cost = summary["cost"]
    sizes = cost["epoch_examples"]
    assert sizes[0] == sizes[3] == n  # epoch 0 has no losses yet; the last is the anneal epoch
    assert sizes[1] < n and sizes[2] < n
    assert cost["examples_trained"] == cost["backward_examples"] == sum(sizes)
    assert cost["full_data_examples"] == 4 * n
    assert cost["backward_fraction"] == pytest.approx(sum(sizes) / (4 * n))
    assert cost["selection_seconds"] > 0
    assert summary["steps"] == sum(math.ceil(size / 64) for size in sizes)
    assert summary["steps"] < summary["steps_per_epoch"] * 4
    assert summary["data_mode"] == "infobatch"
    assert summary["kd"]["alpha"] == 0.5
    assert summary["sparsity"]["sparsity"] == pytest.approx(0.8, abs=1e-3)  # reached at the end
    lines = metrics(tmp_path)
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4]
    assert lines[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert summary["final_test_acc"] > 0.6  # it learned (80% sparse, 4 epochs)


def test_infobatch_weighs_the_kept_low_loss_examples(digits, monkeypatch):
    import datapruning.train.step as step_module

    seen = []
    real = step_module.reduce_losses

    def spy(losses, weights=None):
        seen.append(None if weights is None else weights.clone())
        return real(losses, weights)

    monkeypatch.setattr(step_module, "reduce_losses", spy)
    train(digits, MLP, cfg(epochs=4, data=INFOBATCH), progress=False)
    values = torch.cat([w for w in seen if w is not None]).unique().tolist()
    assert values == pytest.approx([1.0, 2.0])  # 1 / (1 - prune) for the kept low-loss ones
    assert all(w is not None for w in seen)


def crash_then_resume(monkeypatch, crash_at, digits, train_cfg, teacher, run_dir):
    """Crash the run at its ``crash_at``-th evaluation, then run the same command again."""
    import datapruning.train.loop as loop

    class Crash(Exception):
        pass

    calls = {"n": 0}
    real = loop.evaluate

    def evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= crash_at:
            raise Crash
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "evaluate", evaluate)
        with pytest.raises(Crash):
            train(digits, MLP, train_cfg, teacher=teacher, kd=KD, run_dir=run_dir)
    assert (run_dir / RESUME_NAME).exists()
    resumed = train(digits, MLP, train_cfg, teacher=teacher, kd=KD, run_dir=run_dir)
    assert resumed.summary["resumed_from_step"] > 0
    return resumed


@pytest.mark.parametrize(
    ("overrides", "crash_at"),
    [
        ({"checkpoint_every": 7}, 3),  # mid-epoch, inside the pruned epochs
        ({"checkpoint_every": 5, "sparsity": GMP}, 2),
    ],
    ids=["mid-epoch", "gmp"],
)
def test_infobatch_resume_after_a_crash_is_bit_exact(
    digits, teacher, tmp_path, monkeypatch, overrides, crash_at
):
    train_cfg = cfg(deterministic=True, data=INFOBATCH, **overrides)
    whole = train(digits, MLP, train_cfg, teacher=teacher, kd=KD, run_dir=tmp_path / "a")
    resumed = crash_then_resume(monkeypatch, crash_at, digits, train_cfg, teacher, tmp_path / "b")
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    keys = ("epoch", "step", "test_acc", "train_loss", "lr")
    assert [[line[k] for k in keys] for line in metrics(tmp_path / "b")] == [
        [line[k] for k in keys] for line in metrics(tmp_path / "a")
    ]
    for key in ("examples_trained", "epoch_examples", "full_data_examples"):
        assert resumed.summary["cost"][key] == whole.summary["cost"][key]


def test_online_trains_on_the_top_loss_share_of_each_candidate_batch(digits, tmp_path):
    n = digits.num_train
    result = train(
        digits, MLP, cfg(data=DataConfig(mode="online", keep=0.5)), run_dir=tmp_path,
        progress=False,
    )  # fmt: skip
    summary = result.summary
    candidates = 128  # batch_size / keep
    per_epoch = math.ceil(n / candidates)
    assert summary["steps"] == summary["steps_per_epoch"] * 4 == per_epoch * 4
    cost = summary["cost"]
    assert cost["examples_scored"] == 4 * n
    last = n - (per_epoch - 1) * candidates
    assert cost["examples_trained"] == 4 * ((per_epoch - 1) * 64 + max(1, round(0.5 * last)))
    assert cost["forward_examples"] == cost["examples_scored"] + cost["examples_trained"]
    assert cost["selection_seconds"] > 0
    assert metrics(tmp_path)[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_online_selection_keeps_the_highest_losses():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3))
    x, y, index = torch.randn(10, 5), torch.randint(0, 3, (10,)), torch.arange(10) + 100

    def loss_fn(logits, labels, _index):
        return F.cross_entropy(logits, labels, reduction="none")

    select = OnlineSelection(model, loss_fn, keep=0.3)
    running = model[1].running_mean.clone()
    sx, sy, sindex = select(x, y, index)
    assert model.training and torch.equal(model[1].running_mean, running)  # scored in eval mode
    model.eval()
    with torch.no_grad():
        losses = loss_fn(model(x), y, index)
    assert sindex.tolist() == (losses.topk(3).indices + 100).tolist()
    assert torch.equal(sx, x[sindex - 100]) and torch.equal(sy, y[sindex - 100])
    assert select.scored == 10 and select.seconds > 0


def test_full_data_reports_its_cost_as_the_reference(digits):
    cost = train(digits, MLP, cfg(epochs=2), progress=False).summary["cost"]
    assert cost["backward_fraction"] == cost["forward_fraction"] == 1.0
    assert cost["examples_scored"] == 0 and cost["selection_seconds"] == 0.0


def test_infobatch_with_a_step_budget_is_refused(digits, tmp_path):
    with pytest.raises(DataPruningError, match=r"train\.steps=30"):
        train(digits, MLP, cfg(steps=30, data=INFOBATCH), run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_online_selection_with_an_online_teacher_scores_with_its_logits():
    torch.manual_seed(1)
    model, teacher = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    x, y, index = torch.randn(12, 5), torch.randint(0, 3, (12,)), torch.arange(12)

    def kd(logits, labels, rows):  # rows: the teacher's logits, as the loop's online KD loss takes
        assert rows.shape == logits.shape
        return (logits.softmax(1) - rows.softmax(1)).abs().sum(1)

    _, _, chosen = OnlineSelection(model, kd, keep=0.25, teacher=teacher)(x, y, index)
    with torch.no_grad():
        expected = kd(model(x), y, teacher(x)).topk(3).indices
    assert chosen.tolist() == expected.tolist()


PROXY = DataConfig(mode="online", keep=0.5, proxy=ModelConfig(name="mlp", params={"hidden": 8}))


def test_online_proxy_scores_the_candidates_and_reports_its_cost(digits, tmp_path):
    n = digits.num_train
    summary = train(digits, MLP, cfg(data=PROXY), run_dir=tmp_path, progress=False).summary
    cost = summary["cost"]
    assert cost["examples_scored"] == 4 * n
    # The student forwards only what it trains on; the proxy forwards every candidate.
    assert cost["forward_examples"] == cost["backward_examples"] == cost["examples_trained"]
    proxy = cost["proxy"]
    assert (proxy["model"], proxy["params"]) == ("mlp", {"hidden": 8})
    assert proxy["forward_examples"] == 4 * n
    assert proxy["backward_examples"] == cost["examples_trained"]
    built = build_model("mlp", digits.input_shape, digits.num_classes, hidden=8)
    assert proxy["parameters"] == sum(p.numel() for p in built.parameters())
    assert proxy["student_parameters"] > proxy["parameters"]
    assert cost["selection_seconds"] > 0
    assert summary["config"]["train"]["data"]["proxy"] == {"name": "mlp", "params": {"hidden": 8}}


def test_proxy_selection_keeps_its_top_losses_and_trains_on_them():
    torch.manual_seed(0)
    proxy = torch.nn.Linear(5, 3)
    reference = copy.deepcopy(proxy)
    x, y, index = torch.randn(10, 5), torch.randint(0, 3, (10,)), torch.arange(10) + 100

    def loss_fn(logits, labels, _index):
        return F.cross_entropy(logits, labels, reduction="none")

    def sgd(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)

    optimizer, scheduler = sgd(proxy)
    select = ProxySelection(proxy, loss_fn, 0.3, optimizer, scheduler)
    sx, sy, sindex = select(x, y, index)
    with torch.no_grad():
        top = loss_fn(reference(x), y, index).topk(3).indices
    assert sindex.tolist() == (top + 100).tolist()
    assert torch.equal(sx, x[top]) and torch.equal(sy, y[top])
    # One step of the proxy's own optimizer and schedule on the kept rows' mean loss.
    ref_optimizer, ref_scheduler = sgd(reference)
    loss_fn(reference(x[top]), y[top], index[top]).mean().backward()
    ref_optimizer.step()
    ref_scheduler.step()
    for mine, theirs in zip(proxy.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)
    assert scheduler.get_last_lr() == ref_scheduler.get_last_lr() == [0.25]
    assert select.scored == 10 and select.seconds > 0


def test_the_proxy_clips_its_gradients_as_the_run_does():
    """train.clip_grad_norm reaches the proxy: its step is the by-hand clipped one."""
    torch.manual_seed(0)
    proxy = torch.nn.Linear(5, 3)
    reference = copy.deepcopy(proxy)
    x, y, index = torch.randn(10, 5) * 50, torch.randint(0, 3, (10,)), torch.arange(10)

    def loss_fn(logits, labels, _index):
        return F.cross_entropy(logits, labels, reduction="none")

    def sgd(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    optimizer, scheduler = sgd(proxy)
    ProxySelection(proxy, loss_fn, 0.5, optimizer, scheduler, clip_grad_norm=0.1)(x, y, index)
    with torch.no_grad():
        top = loss_fn(reference(x), y, index).topk(5).indices
    ref_optimizer, _ = sgd(reference)
    loss_fn(reference(x[top]), y[top], index[top]).mean().backward()
    assert torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.1) > 0.1  # it clips
    ref_optimizer.step()
    for mine, theirs in zip(proxy.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_online_proxy_runs_are_seeded_and_resume_bit_exact(digits, teacher, tmp_path, monkeypatch):
    # The proxy learns on every third batch: where the run resumes, that count goes on.
    train_cfg = cfg(
        deterministic=True, checkpoint_every=7, data=PROXY.model_copy(update={"proxy_every": 3})
    )
    whole = train(digits, MLP, train_cfg, teacher=teacher, kd=KD, run_dir=tmp_path / "a")
    again = train(digits, MLP, train_cfg, teacher=teacher, kd=KD, progress=False)
    other = train(
        digits, MLP, cfg(data=DataConfig(mode="online", keep=0.5)), teacher=teacher, kd=KD
    )
    resumed = crash_then_resume(monkeypatch, 3, digits, train_cfg, teacher, tmp_path / "b")
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    # The proxy, not the student, chose: the weights differ from student-scored selection.
    assert any(
        not torch.equal(value, other.model.state_dict()[key])
        for key, value in whole.model.state_dict().items()
    )
    keys = ("epoch", "step", "test_acc", "train_loss", "lr")
    assert [[line[k] for k in keys] for line in metrics(tmp_path / "b")] == [
        [line[k] for k in keys] for line in metrics(tmp_path / "a")
    ]
    for key in ("examples_trained", "examples_scored", "proxy"):
        assert resumed.summary["cost"][key] == whole.summary["cost"][key]


def test_a_proxy_that_learns_every_few_batches_only_scores_the_others():
    torch.manual_seed(0)
    proxy = torch.nn.Linear(5, 3)
    optimizer = torch.optim.SGD(proxy.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def loss_fn(logits, labels, _index):
        return F.cross_entropy(logits, labels, reduction="none")

    select = ProxySelection(proxy, loss_fn, 0.5, optimizer, scheduler, every=2)
    changed = []
    for _ in range(5):
        before = copy.deepcopy(proxy.state_dict())
        x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
        _, _, chosen = select(x, y, torch.arange(8))
        logits = x @ before["weight"].T + before["bias"]  # the proxy before this call
        assert chosen.tolist() == loss_fn(logits, y, None).topk(4).indices.tolist()
        changed.append(not torch.equal(before["weight"], proxy.weight))
    assert changed == [True, False, True, False, True]
    assert select.trained == 3 * 4 and select.scored == 5 * 8
    assert scheduler.last_epoch == 5  # the schedule follows every call


def test_a_proxy_outside_online_mode_is_refused():
    with pytest.raises(ValueError, match="proxy applies to mode online"):
        DataConfig(mode="infobatch", proxy=ModelConfig(name="mlp"))
    with pytest.raises(ValueError, match="proxy_every=2 applies with a proxy"):
        DataConfig(mode="online", keep=0.5, proxy_every=2)


def test_a_proxy_that_cannot_be_built_fails_before_the_run_starts(digits, tmp_path):
    bad = DataConfig(mode="online", keep=0.5, proxy=ModelConfig(name="mlp", params={"bogus": 1}))
    with pytest.raises(DataPruningError, match=r"train\.data\.proxy: .*bogus"):
        train(digits, MLP, cfg(data=bad), run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()
