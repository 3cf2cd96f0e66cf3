"""The loop's step and its settings: per-example losses, weights, precision, optimizer,
channels-last, compile, device checks and the synchronised clock."""

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from runs_helper import SUMMARY_KEYS
from weights_helper import assert_same_weights

from datapruning.config import KDConfig, ModelConfig, TrainConfig, parse_config
from datapruning.data.sources import load_dataset
from datapruning.errors import ConfigError, DataPruningError
from datapruning.train import loop
from datapruning.train.device import Precision, check_compile, resolve_device, synchronizer
from datapruning.train.kd import mean_kd_loss, per_example_kd_loss
from datapruning.train.loop import RESUME_NAME, fit, train
from datapruning.train.run import resolve_run
from datapruning.train.schedule import StepPlan, make_optimizer, make_scheduler
from datapruning.train.step import StepResult, TrainStep, make_loss_fn, reduce_losses
from datapruning.train.tta import Stopwatch

MLP = ModelConfig(name="mlp", params={"hidden": 32})


def cfg(**overrides):
    base = {"epochs": 3, "batch_size": 64, "lr": 0.1, "seed": 0, "targets": [0.5]}
    return TrainConfig(**{**base, **overrides})


class Crash(Exception):
    pass


def crash_on_evaluation(monkeypatch, after):
    calls = {"n": 0}
    real = loop.evaluate

    def evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= after:
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", evaluate)


def crash_and_resume(digits, train_cfg, tmp_path, monkeypatch, **kwargs):
    """An uninterrupted run and one killed at its second evaluation then resumed."""
    whole = train(digits, MLP, train_cfg, run_dir=tmp_path / "a", **kwargs)
    with monkeypatch.context() as patch:
        crash_on_evaluation(patch, after=2)
        with pytest.raises(Crash):
            train(digits, MLP, train_cfg, run_dir=tmp_path / "b", **kwargs)
    assert (tmp_path / "b" / RESUME_NAME).exists()
    resumed = train(digits, MLP, train_cfg, run_dir=tmp_path / "b", **kwargs)
    assert resumed.summary["resumed_from_step"] > 0
    return whole, resumed


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def logits():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(8, 5, generator=gen) * 3
    cached = torch.randn(20, 5, generator=gen) * 3  # a teacher's logits on 20 examples
    targets = torch.randint(0, 5, (8,), generator=gen)
    index = torch.randperm(20, generator=gen)[:8]
    return student, targets, cached, index


# --- the per-example loss and its reduction -----------------------------------------------


def test_per_example_kd_loss_averages_to_the_batch_loss(logits):
    student, targets, cached, index = logits
    losses = per_example_kd_loss(student, targets, cached, index, alpha=0.3, temperature=2.0)
    assert losses.shape == (8,) and losses.dtype == torch.float32
    teacher = cached[index]
    ce = F.cross_entropy(student, targets)
    kl = F.kl_div(
        F.log_softmax(student / 2, 1), F.log_softmax(teacher / 2, 1), log_target=True,
        reduction="batchmean",
    )  # fmt: skip
    assert losses.mean().item() == pytest.approx((0.7 * ce + 0.3 * 4 * kl).item(), rel=1e-6)
    assert mean_kd_loss(student, targets, teacher, 0.3, 2.0).item() == pytest.approx(
        losses.mean().item(), rel=1e-6
    )
    # Each row is that example's own loss: a one-row batch gives the same value.
    one = per_example_kd_loss(student[3:4], targets[3:4], teacher[3:4], alpha=0.3, temperature=2.0)
    assert one.item() == pytest.approx(losses[3].item(), rel=1e-6)
    # bf16 logits are computed in float32.
    low = per_example_kd_loss(
        student.bfloat16(), targets, cached.bfloat16(), index, alpha=0.3, temperature=2.0
    )
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, losses, rtol=0.05, atol=0.05)


def test_loss_fn_is_cross_entropy_or_kd(logits):
    student, targets, cached, index = logits
    ce = make_loss_fn()(student, targets, index)
    torch.testing.assert_close(ce, F.cross_entropy(student, targets, reduction="none"))
    assert reduce_losses(ce).item() == pytest.approx(F.cross_entropy(student, targets).item())
    kd = make_loss_fn(cached, alpha=0.5, temperature=4.0)(student, targets, index)
    want = per_example_kd_loss(student, targets, cached[index], alpha=0.5, temperature=4.0)
    torch.testing.assert_close(kd, want)


def test_weights_rescale_examples_and_keep_the_batch_mean(logits):
    student, targets, cached, index = logits
    losses = per_example_kd_loss(student, targets, cached, index, alpha=0.5, temperature=2.0)
    weights = torch.tensor([2.0, 0.0, 1.0, 1.0, 0.5, 1.0, 3.0, 1.0])
    assert reduce_losses(losses, torch.ones(8)).item() == pytest.approx(losses.mean().item())
    want = sum(w * v for w, v in zip(weights.tolist(), losses.tolist(), strict=True)) / 8
    assert reduce_losses(losses, weights).item() == pytest.approx(want, rel=1e-6)
    weighted = per_example_kd_loss(
        student, targets, cached, index, alpha=0.5, temperature=2.0, weights=weights
    )
    torch.testing.assert_close(weighted, losses * weights)
    # A zero weight takes the example out of the gradient.
    x = student.clone().requires_grad_(True)
    reduce_losses(make_loss_fn()(x, targets, index), weights).backward()
    assert torch.all(x.grad[1] == 0) and x.grad[0].abs().sum() > 0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"teacher": torch.zeros(20, 4)},
            "teacher_logits have 4 classes but student_logits have 5",
        ),
        ({"temperature": 0.0}, "temperature"),
        ({"index": torch.arange(3)}, "index"),
        ({"index": None}, "rows"),
        ({"weights": torch.ones(3)}, "weights"),
        ({"alpha": 1.5}, "alpha"),
    ],
)
def test_per_example_kd_loss_refuses_bad_input(logits, change, match):
    student, targets, cached, index = logits
    args = {"teacher": cached, "index": index, "alpha": 0.5, "temperature": 2.0, "weights": None}
    args |= change
    with pytest.raises(DataPruningError, match=match):
        per_example_kd_loss(
            student, targets, args["teacher"], args["index"], alpha=args["alpha"],
            temperature=args["temperature"], weights=args["weights"],
        )  # fmt: skip


def test_clip_grad_norm_rescales_the_gradients_before_the_optimizer_steps():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=generator) * 50  # a large gradient
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    fp32 = Precision("fp32", torch.device("cpu"))

    def stepped(clip):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        settings = TrainConfig(lr=0.1, momentum=0.0, weight_decay=0.0)
        optimizer = make_optimizer(model.parameters(), settings)
        scheduler = make_scheduler(optimizer, StepPlan(5, 5, 1, 0))
        TrainStep(model, make_loss_fn(), optimizer, scheduler, fp32, clip_grad_norm=clip)(
            x, y, torch.arange(6), 1
        )
        return model

    torch.manual_seed(0)
    by_hand = torch.nn.Linear(4, 3)
    F.cross_entropy(by_hand(x), y, reduction="none").mean().backward()  # as the step reduces
    assert torch.nn.utils.clip_grad_norm_(by_hand.parameters(), 0.5) > 0.5  # it does clip
    with torch.no_grad():
        for p in by_hand.parameters():
            p.add_(p.grad, alpha=-0.1)  # as SGD steps
    clipped, unclipped = stepped(0.5), stepped(None)
    for name, want in by_hand.state_dict().items():
        torch.testing.assert_close(clipped.state_dict()[name], want, rtol=1e-6, atol=1e-6)
    assert (unclipped.weight - by_hand.weight).abs().max() > 1e-3


def test_train_step_hands_each_step_to_the_after_step_hooks():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = make_optimizer(model.parameters(), TrainConfig(lr=0.1))
    scheduler = make_scheduler(optimizer, StepPlan(5, 5, 1, 0))
    seen: list[StepResult] = []
    step = TrainStep(
        model, make_loss_fn(), optimizer, scheduler, Precision("fp32", torch.device("cpu")),
        after_step=[seen.append],
    )  # fmt: skip
    x, y, index = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(10, 16)
    want = F.cross_entropy(model(x), y, reduction="none").detach()
    loss = step(x, y, index, 1)
    assert loss.item() == pytest.approx(want.mean().item())
    assert len(seen) == 1 and seen[0].step == 1
    assert torch.equal(seen[0].index, index)
    torch.testing.assert_close(seen[0].losses, want)
    assert scheduler.last_epoch == 1


# --- the step plan ------------------------------------------------------------------------


def test_the_loop_asks_the_plan_for_each_epochs_length(digits, tmp_path):
    class ShortEpochs(StepPlan):
        def steps_in_epoch(self, epoch):
            return 5 + epoch  # epochs of varying length, as a dynamic sampler may ask

    run = resolve_run(digits, MLP, cfg(steps=18), run_dir=tmp_path)
    run.plan = ShortEpochs(run.plan.steps_per_epoch, 18, 3, 0)
    tmp_path.mkdir(exist_ok=True)
    summary = fit(run)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [5, 11, 18]
    assert summary["steps"] == 18


# --- optimizer ----------------------------------------------------------------------------


def test_adamw_defaults_and_decoupled_weight_decay():
    adamw = TrainConfig(optimizer="adamw")
    assert (adamw.lr, adamw.weight_decay) == (1e-3, 0.05)
    assert TrainConfig(optimizer="adamw", lr=0.01).lr == 0.01
    loaded = parse_config({"train": {"optimizer": "adamw", "weight_decay": 0.1}}).train
    assert (loaded.lr, loaded.weight_decay) == (1e-3, 0.1)
    weight = torch.nn.Parameter(torch.full((3,), 2.0))
    optimizer = make_optimizer([weight], TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.5))
    assert isinstance(optimizer, torch.optim.AdamW)
    weight.grad = torch.zeros(3)
    optimizer.step()
    # Decoupled: a zero gradient still shrinks the weight by lr * weight_decay.
    torch.testing.assert_close(weight.detach(), torch.full((3,), 2.0 * (1 - 0.1 * 0.5)))
    sgd = make_optimizer([weight], TrainConfig())
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    with pytest.raises(ConfigError, match="betas"):
        parse_config({"train": {"optimizer": "adamw", "betas": [0.9, 1.0]}})


def test_adamw_trains_and_resumes_bit_exact(digits, tmp_path, monkeypatch):
    train_cfg = cfg(epochs=4, optimizer="adamw", lr=1e-2, checkpoint_every=7, deterministic=True)
    whole, resumed = crash_and_resume(digits, train_cfg, tmp_path, monkeypatch)
    assert_same_weights(whole.model, resumed.model)
    assert whole.summary["final_test_acc"] > 0.85
    sgd = train(digits, MLP, cfg(epochs=1))
    adamw = train(digits, MLP, cfg(epochs=1, optimizer="adamw"))
    assert not torch.equal(sgd.model.net[1].weight, adamw.model.net[1].weight)


# --- precision ----------------------------------------------------------------------------


def test_bf16_on_cpu_trains_and_resumes_bit_exact(digits, tmp_path, monkeypatch):
    train_cfg = cfg(epochs=4, precision="bf16", checkpoint_every=7, deterministic=True)
    kd = {"teacher": train(digits, MLP, cfg(epochs=2)).model, "kd": KDConfig(alpha=0.5)}
    whole, resumed = crash_and_resume(digits, train_cfg, tmp_path, monkeypatch, **kd)
    assert_same_weights(whole.model, resumed.model)
    assert whole.summary["config"]["train"]["precision"] == "bf16"
    # Weights stay float32; the forward pass ran in bf16, so the run differs from
    # fp32's, but not in what it learns.
    assert resumed.model.net[1].weight.dtype == torch.float32
    fp32 = train(digits, MLP, cfg(epochs=4), **kd)
    assert not torch.equal(fp32.model.net[1].weight, whole.model.net[1].weight)
    assert whole.summary["final_test_acc"] == pytest.approx(
        fp32.summary["final_test_acc"], abs=0.03
    )
    assert fp32.summary["final_test_acc"] > 0.6


def test_fp16_on_cpu_is_refused_before_the_run_dir_is_touched(digits, tmp_path):
    with pytest.raises(DataPruningError, match="precision=fp16 needs a CUDA device") as info:
        train(digits, MLP, cfg(precision="fp16"), run_dir=tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="precision"):
        parse_config({"train": {"precision": "fp8"}})


# --- device -------------------------------------------------------------------------------


def test_bad_devices_are_one_line_errors(digits, tmp_path):
    for name in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(ConfigError, match="device"):
            parse_config({"train": {"device": name}})
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DataPruningError, match="no CUDA device"):
            resolve_device("cuda")
        with pytest.raises(DataPruningError, match=r"train\.device=cuda:9"):
            train(digits, MLP, cfg(device="cuda:9"), run_dir=tmp_path / "run")
        assert not (tmp_path / "run").exists()
    else:
        with pytest.raises(DataPruningError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_compile_is_refused_where_it_cannot_run(monkeypatch):
    with pytest.raises(DataPruningError, match=r"train\.compile"):
        check_compile(torch.device("mps"))
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(DataPruningError, match=r"train\.compile on CPU needs a C\+\+ compiler"):
        check_compile(torch.device("cpu"))


# --- the clock ----------------------------------------------------------------------------


def test_the_clock_synchronises_cuda_when_it_starts_and_stops(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    device = torch.device("cuda", 0)
    watch = Stopwatch(synchronizer(device))
    with watch.running():
        assert calls == [device]
    assert calls == [device, device]
    watch.start()
    watch.stop()
    watch.stop()  # stopping a stopped watch neither syncs nor counts
    assert len(calls) == 4
    assert synchronizer(torch.device("cpu")) is None


def test_the_loop_syncs_per_stretch_of_steps_not_per_step(digits, monkeypatch):
    calls = {"n": 0}

    def counting(device):
        def sync():
            calls["n"] += 1

        return sync

    monkeypatch.setattr(loop, "synchronizer", counting)
    result = train(digits, MLP, cfg(epochs=3, checkpoint_every=0))
    assert result.summary["steps"] == 66
    assert calls["n"] == 2 * 3  # start and stop of each epoch's steps


# --- channels-last and compile ------------------------------------------------------------


def images(digits):
    """digits as 1x8x8 images, for the conv models."""
    return replace(
        digits,
        x_train=digits.x_train.reshape(-1, 1, 8, 8)[:256],
        y_train=digits.y_train[:256],
        x_test=digits.x_test.reshape(-1, 1, 8, 8),
    )


def test_channels_last_resnet18_matches_the_default_layout(digits):
    data = images(digits)
    # width 8: at width 4, torch 2.13 CPU channels-last ResNet-18 corrupts the heap
    # (a torch bug, "corrupted double-linked list", seen outside this code too).
    resnet = ModelConfig(name="resnet18", params={"width": 8})
    # Two small steps: the layouts' gradients agree to ~1e-5 (relative), and a
    # long run would amplify that rounding into visibly different weights.
    common = {"steps": 2, "lr": 0.01, "batch_size": 64, "eval_every": 0}
    plain = train(data, resnet, cfg(**common))
    last = train(data, resnet, cfg(**common, channels_last=True))
    assert last.model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    a, b = plain.model.state_dict(), last.model.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)
    assert last.summary["final_test_acc"] == pytest.approx(
        plain.summary["final_test_acc"], abs=0.01
    )
    with pytest.raises(DataPruningError, match="channels_last applies to models with 2-D conv"):
        train(digits, MLP, cfg(channels_last=True))


def test_compile_path_reports_compile_seconds_and_keeps_checkpoint_keys(
    digits, tmp_path, monkeypatch
):
    # The eager backend runs the loop's compile path in seconds (inductor: slow test below).
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend="eager")
    )
    result = train(digits, MLP, cfg(epochs=1, compile=True), run_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["compile_seconds"] >= 0
    assert summary["compile_seconds"] <= summary["train_seconds"]
    assert "net.1.weight" in result.model.state_dict()  # no _orig_mod. prefix
    assert train(digits, MLP, cfg(epochs=1)).summary["compile_seconds"] is None


@pytest.mark.slow
def test_compile_with_inductor_on_cpu_matches_eager(digits):
    small = replace(digits, x_train=digits.x_train[:128], y_train=digits.y_train[:128])
    common = {"epochs": 1, "eval_every": 0}
    compiled = train(small, MLP, cfg(**common, compile=True))
    eager = train(small, MLP, cfg(**common))
    a, b = compiled.model.state_dict(), eager.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert compiled.summary["compile_seconds"] > 0


# --- CUDA -----------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_channels_last_compile(digits, precision):
    data = images(digits)
    resnet = ModelConfig(name="resnet18", params={"width": 8})
    result = train(
        data,
        resnet,
        cfg(epochs=3, device="cuda", precision=precision, channels_last=True, compile=True),
    )
    assert result.summary["final_test_acc"] > 0.3
    assert 0 < result.summary["compile_seconds"] < result.summary["train_seconds"]
    assert next(result.model.parameters()).dtype == torch.float32


@pytest.mark.cuda
def test_cuda_torch_loader_streams_pinned_batches(digits):
    memory = train(digits, MLP, cfg(device="cuda", deterministic=False))
    streamed = train(digits, MLP, cfg(device="cuda", loader="torch"))
    assert streamed.summary["steps"] == memory.summary["steps"]
    assert streamed.summary["final_test_acc"] == pytest.approx(
        memory.summary["final_test_acc"], abs=0.02
    )
