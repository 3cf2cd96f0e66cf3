"""The loop's kernels: masked optimizers under the pruner, the KD dispatcher, and the forced
Triton path (Triton's CPU interpreter) through ``train()`` against the torch path."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datapruning.config import DynamicNM, KDConfig, ModelConfig, TrainConfig, sparsity_config
from datapruning.data.sources import load_dataset
from datapruning.kernels import HAVE_TRITON, forced_backend
from datapruning.kernels.masked_optim import MaskedAdamW, MaskedSGD
from datapruning.train import loop
from datapruning.train.loop import train
from datapruning.train.schedule import make_optimizer
from datapruning.train.sparsity import MagnitudePruner

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = ModelConfig(name="mlp", params={"hidden": 16})
GLOBAL = sparsity_config(target=0.8, scope="global", start=0.2, end=0.8, every=2)
DYNAMIC = sparsity_config(scope="nm", n=2, m=4, mode="dynamic", start=0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def stack(*widths: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def assert_zero_where_pruned(pruner, optimizer, step):
    for name, mask in pruner.masks.items():
        weight = pruner.weights[name]
        assert (weight[~mask] == 0).all() and not torch.signbit(weight[~mask]).any(), step
        for value in optimizer.state.get(weight, {}).values():
            if value.shape == weight.shape:
                assert (value[~mask] == 0).all(), (name, step)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("rewind", [None, 3])
def test_pruner_hands_each_new_mask_to_the_masked_optimizer(optimizer, rewind):
    torch.manual_seed(0)
    model = stack(8, 32, 32, 32, 3)
    cfg = sparsity_config(target=0.8, start=2, end=10, every=2, rewind=rewind)
    pruner = MagnitudePruner(model, cfg, 16)
    train_cfg = TrainConfig(optimizer=optimizer, lr=0.05, weight_decay=1e-2)
    opt = make_optimizer(model.parameters(), train_cfg, masks=pruner.optimizer_masks())
    assert isinstance(opt, MaskedAdamW if optimizer == "adamw" else MaskedSGD)
    pushed = []
    set_masks = opt.set_masks
    opt.set_masks = lambda masks: (pushed.append(step), set_masks(masks))  # type: ignore[method-assign]
    fills = []
    # The masked path never falls back to the pruner's own masked_fill of the state.
    pruner.apply = lambda optimizer=None: fills.append(optimizer)  # type: ignore[method-assign]
    for step in range(1, 17):
        x = torch.randn(16, 8)
        loss = F.cross_entropy(model(x), torch.randint(0, 3, (16,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 10:
            state_before_final = len(opt.state)
        pruner.step(step, opt)
        assert_zero_where_pruned(pruner, opt, step)
        # The optimizer masks with the pruner's current masks.
        assert {id(p) for p in opt.masks} == {id(w) for w in pruner.optimizer_masks()}
        for weight, mask in pruner.optimizer_masks().items():
            assert torch.equal(opt.masks[weight], mask), step
        if rewind is not None and step == 10:
            assert state_before_final and not opt.state  # a rewind restarts the optimizer
    assert pushed == [2, 4, 6, 8, 10] and fills == []
    assert pruner.report()["sparsity"] == pytest.approx(0.8, abs=1e-3)


def captured_optimizers(monkeypatch):
    made = []
    real = loop.make_optimizer

    def capture(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(loop, "make_optimizer", capture)
    return made


@pytest.mark.parametrize(
    ("optimizer", "sparsity", "kind", "path"),
    [
        ("sgd", GLOBAL, MaskedSGD, "MaskedSGD (torch)"),
        ("adamw", sparsity_config(scope="layer", target=0.5), MaskedAdamW, "MaskedAdamW (torch)"),
        ("sgd", sparsity_config(scope="nm", start=0.5), MaskedSGD, "MaskedSGD (torch)"),
        ("sgd", DYNAMIC, torch.optim.SGD, "SGD (torch)"),  # dense weights: a plain optimizer
        ("adamw", sparsity_config(), torch.optim.AdamW, "AdamW (torch)"),
    ],
)
def test_the_loop_takes_a_masked_optimizer_when_the_pruner_zeroes_weights(
    digits, monkeypatch, optimizer, sparsity, kind, path
):
    made = captured_optimizers(monkeypatch)
    cfg = TrainConfig(steps=8, batch_size=64, optimizer=optimizer, sparsity=sparsity, seed=0)
    summary = train(digits, MLP, cfg).summary
    assert len(made) == 1 and type(made[0]) is kind
    assert summary["kernels"]["optimizer"] == path
    assert summary["kernels"]["kd_loss"] is None
    want_masks = {"global": "select", "layer": "select", "nm": "nm_mask"}.get(sparsity.scope)
    if sparsity.enabled:
        assert summary["kernels"]["masks"].startswith(want_masks)
    else:
        assert summary["kernels"]["masks"] is None


def test_pruned_weights_and_state_are_zero_after_every_step_of_the_loop(digits, monkeypatch):
    made = captured_optimizers(monkeypatch)
    real_step = MagnitudePruner.step
    checked = []

    def step_then_check(self, step, optimizer=None):
        real_step(self, step, optimizer)
        assert optimizer is made[0]
        assert_zero_where_pruned(self, optimizer, step)
        checked.append(step)

    monkeypatch.setattr(MagnitudePruner, "step", step_then_check)
    cfg = TrainConfig(steps=12, batch_size=64, momentum=0.9, sparsity=GLOBAL, seed=0)
    result = train(digits, MLP, cfg)
    assert checked == list(range(1, 13))
    assert result.summary["sparsity"]["sparsity"] == pytest.approx(0.8, abs=1e-3)


@pytest.mark.skipif(not HAVE_TRITON, reason="needs triton")
@pytest.mark.parametrize("sparsity", [GLOBAL, DYNAMIC], ids=["gmp", "dynamic-2:4"])
def test_forced_triton_through_train_matches_the_torch_path(digits, sparsity):
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    kd = KDConfig(alpha=0.5, temperature=2.0)
    cfg = TrainConfig(steps=6, batch_size=128, lr=0.1, momentum=0.9, sparsity=sparsity, seed=0)
    runs = {}
    for path in ("triton", "torch"):
        with forced_backend(path):
            runs[path] = train(digits, MLP, cfg, teacher=teacher, kd=kd)
    triton_run, torch_run = runs["triton"], runs["torch"]
    assert triton_run.summary["kernels"]["kd_loss"] == "triton"
    assert torch_run.summary["kernels"]["kd_loss"] == "torch"
    if isinstance(sparsity, DynamicNM):
        assert triton_run.summary["kernels"]["masks"] == "nm_mask (triton)"
        assert triton_run.summary["kernels"]["optimizer"] == "SGD (torch)"
    else:
        assert triton_run.summary["kernels"]["optimizer"] == "MaskedSGD (triton)"
    a, b = triton_run.model.state_dict(), torch_run.model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)
    for run in runs.values():
        report = run.summary["sparsity"]
        zeros = round(0.8 * 256) / 256 if sparsity.scope == "global" else 0.5  # one 16x16 layer
        assert report["sparsity"] == zeros


@pytest.mark.cuda
@pytest.mark.parametrize("sparsity", [GLOBAL, DYNAMIC], ids=["gmp", "dynamic-2:4"])
def test_the_loop_takes_the_triton_kernels_by_default_on_cuda(digits, sparsity):
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    kd = KDConfig(alpha=0.5, temperature=2.0)
    cfg = TrainConfig(
        steps=6, batch_size=128, lr=0.1, momentum=0.9, sparsity=sparsity, seed=0, device="cuda"
    )
    fused = train(digits, MLP, cfg, teacher=teacher, kd=kd)
    with forced_backend("torch"):
        reference = train(digits, MLP, cfg, teacher=teacher, kd=kd)
    if isinstance(sparsity, DynamicNM):
        want = {"kd_loss": "triton", "optimizer": "SGD (torch)", "masks": "nm_mask (triton)"}
    else:
        want = {
            "kd_loss": "triton",
            "optimizer": "MaskedSGD (triton)",
            "masks": "select (radix)",
        }
    ran = dict(fused.summary["kernels"])
    assert all(path["reason"] for path in ran.pop("paths").values())
    assert ran == want
    assert reference.summary["kernels"]["kd_loss"] == "torch"
    a, b = fused.model.state_dict(), reference.model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-3, msg=name)
    zeros = round(0.8 * 256) / 256 if sparsity.scope == "global" else 0.5
    assert fused.summary["sparsity"]["sparsity"] == zeros
