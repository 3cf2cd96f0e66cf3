"""N:M sparsity trained from scratch (mode dynamic, SR-STE) and its place in the loop."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datapruning.config import (
    DynamicNM,
    ModelConfig,
    OneShotNM,
    SparsityConfig,
    TrainConfig,
    parse_config,
    sparsity_config,
)
from datapruning.data.sources import load_dataset
from datapruning.errors import ConfigError
from datapruning.models import build_model
from datapruning.train.checkpoint import load_checkpoint
from datapruning.train.loop import RESUME_NAME, train
from datapruning.train.sparsity import (
    DynamicNMPruner,
    MagnitudePruner,
    build_pruner,
    export_sparse,
    nm_violations,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def stack(*widths: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def dynamic(**overrides) -> SparsityConfig:
    return sparsity_config(scope="nm", mode="dynamic", start=0, **overrides)


def train_steps(model, pruner, steps, lr=0.1, data=None):
    """SGD steps on a fixed batch; the losses."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x, y = data or (torch.randn(64, 8), torch.randint(0, 3, (64,)))
    losses = []
    for step in range(1, steps + 1):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step(step, optimizer)
        losses.append(loss.item())
    return losses


def test_dynamic_trains_through_masked_weights_with_plain_keys():
    torch.manual_seed(0)
    model = stack(8, 32, 32, 3)
    keys = list(model.state_dict())
    pruner = build_pruner(model, dynamic(prune_first_last=True), 200)
    assert isinstance(pruner, DynamicNMPruner) and not pruner.zeroes_pruned
    losses = train_steps(model, pruner, 60)
    assert losses[-1] < 0.5 * losses[0]
    assert list(model.state_dict()) == keys  # no parametrization keys, no swap left behind
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    # The weights stay dense; the forward is the masked model's.
    assert all((w != 0).all() for w in pruner.weights.values())
    masked = stack(8, 32, 32, 3)
    masked.load_state_dict(export_sparse(model, pruner))
    x = torch.randn(5, 8)
    assert torch.equal(model(x), masked(x))


def test_the_mask_follows_the_weights_every_step():
    torch.manual_seed(0)
    model = stack(8, 8, 3)
    pruner = build_pruner(model, dynamic(prune_first_last=True), 10)
    weight = model[0].weight
    before = pruner.mask("0.weight").clone()
    row, col = torch.nonzero(~before)[0].tolist()
    with torch.no_grad():  # as an optimizer step would: the pruned weight outgrows its group
        weight[row, col] = 10.0
    assert pruner.mask("0.weight")[row, col]  # re-entered at once, no schedule involved
    assert pruner.mask("0.weight").sum() == before.sum()
    # And under training the masks move on their own.
    masks = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(1, 30):
        F.cross_entropy(model(torch.randn(32, 8)), torch.randint(0, 3, (32,))).backward()
        optimizer.step()
        optimizer.zero_grad()
        pruner.step(step)
        masks.append(pruner.mask("0.weight").clone())
    revived = [(~a & b).any().item() for a, b in itertools.pairwise(masks)]
    assert any(revived)


@pytest.mark.parametrize("decay", [0.0, 2e-4, 0.05])
def test_sr_ste_gradient_is_straight_through_plus_the_sparse_refined_decay(decay):
    torch.manual_seed(0)
    layer = nn.Linear(8, 4)
    model = nn.Sequential(layer)
    pruner = build_pruner(model, dynamic(prune_first_last=True, sr_ste_decay=decay), 10)
    x, g = torch.randn(6, 8), torch.randn(6, 4)
    w = layer.weight.detach().clone()
    mask = (
        torch.zeros(4, 2, 4, dtype=torch.bool)
        .scatter_(2, w.abs().view(4, 2, 4).topk(2, dim=2).indices, True)
        .view(4, 8)
    )
    out = model(x)
    assert torch.allclose(out, x @ (w * mask).t() + layer.bias)
    (out * g).sum().backward()
    # d/dW of sum(g * (x (W*mask)^T)) passed straight through: g^T x on every weight.
    expected = g.t() @ x + decay * (~mask) * w
    assert torch.allclose(layer.weight.grad, expected, atol=1e-6)
    assert torch.equal(pruner.mask("0.weight"), mask)


def test_progressive_fades_the_pruned_weights_out_linearly():
    torch.manual_seed(0)
    layer = nn.Linear(8, 4, bias=False)
    model = nn.Sequential(layer)
    cfg = sparsity_config(scope="nm", mode="dynamic", progressive=True, start=10, end=30)
    pruner = build_pruner(model, cfg.model_copy(update={"prune_first_last": True}), 40)
    assert [pruner.pruned_scale(t) for t in (0, 9, 10, 20, 29, 30, 40)] == pytest.approx(
        [1, 1, 1, 0.5, 0.05, 0, 0]
    )
    x = torch.randn(3, 8)
    mask = pruner.mask("0.weight")
    pruner.step(20)
    scaled = layer.weight * (mask + 0.5 * ~mask)
    assert torch.allclose(model(x), x @ scaled.t())
    pruner.step(30)
    assert torch.allclose(model(x), x @ (layer.weight * mask).t())


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4)])
def test_report_and_export_hold_exactly_n_of_every_m(n, m):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 8, 3, padding=1),
        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 3),
    )  # fmt: skip
    pruner = build_pruner(model, dynamic(n=n, m=m), 30)
    data = (torch.randn(32, 1, 16), torch.randint(0, 3, (32,)))
    train_steps(model, pruner, 10, lr=0.05, data=data)
    report = pruner.report()
    assert report["mode"] == "dynamic" and report["target"] == 1 - n / m
    assert report["sparsity"] == 1 - n / m
    exported = export_sparse(model, pruner)
    for name in pruner.weights:
        assert report["layers"][name]["sparsity"] == 1 - n / m
        assert (exported[name] == 0).float().mean().item() == 1 - n / m
        assert nm_violations(exported[name], n, m) == 0
    assert (exported["0.weight"] != 0).all()  # the first layer stays dense by default


def test_attention_weights_are_masked_in_training_and_in_the_fast_eval_path():
    torch.manual_seed(0)
    model = build_model("vit", (1, 8, 8), 3, patch_size=4, dim=16, depth=1, heads=2)
    pruner = build_pruner(model, dynamic(), 20)
    assert any("in_proj_weight" in name for name in pruner.weights)
    assert any("out_proj.weight" in name for name in pruner.weights)
    x = torch.randn(4, 1, 8, 8)
    train_steps(model, pruner, 3, data=(x, torch.randint(0, 3, (4,))))
    exported = build_model("vit", (1, 8, 8), 3, patch_size=4, dim=16, depth=1, heads=2)
    exported.load_state_dict(export_sparse(model, pruner))
    assert torch.allclose(model(x), exported(x), atol=1e-6)
    model.eval(), exported.eval()
    with torch.no_grad():  # TransformerEncoderLayer's fused path reads the weights directly
        assert torch.allclose(model(x), exported(x), atol=1e-5)


def test_before_start_the_model_is_dense():
    torch.manual_seed(0)
    model = stack(8, 8, 3)
    pruner = build_pruner(model, dynamic(prune_first_last=True).model_copy(update={"start": 5}), 9)
    x = torch.randn(2, 8)
    assert torch.equal(model(x), F.linear(F.relu(model[0](x)), model[2].weight, model[2].bias))
    assert pruner.sparsity == 0
    pruner.step(5)
    assert pruner.sparsity == 0.5
    # end (0.7 by default) only bounds the progressive decay: a late start is no error.
    assert build_pruner(stack(8, 8, 8, 3), dynamic().model_copy(update={"start": 0.9}), 10)
    assert not torch.equal(model(x), F.linear(F.relu(model[0](x)), model[2].weight, model[2].bias))


@pytest.mark.parametrize(
    ("sparsity", "fragment"),
    [
        ({"mode": "dynamic", "scope": "layer", "target": 0.5}, "needs scope nm"),
        ({"scope": "nm", "progressive": True}, "progressive applies to dynamic N:M"),
        ({"scope": "nm", "mode": "dynamic", "rewind": 3}, "rewind applies to gradual magnitude"),
        ({"scope": "nm", "kernel": "semi_structured"}, "kernel applies to dynamic N:M"),
        ({"target": 0.5, "sr_ste_decay": 0.1}, "sr_ste_decay applies to dynamic N:M"),
        ({"scope": "nm", "mode": "dynamic", "n": 1, "kernel": "semi_structured"}, "n 2, m 4"),
        ({"scope": "nm", "mode": "dynamic", "sr_ste_decay": -1}, "sr_ste_decay"),
        ({"scope": "nm", "mode": "sometimes"}, "mode"),
    ],
)
def test_bad_dynamic_config_is_one_line(sparsity, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_config({"train": {"sparsity": sparsity}})
    assert "\n" not in str(info.value)


def test_oneshot_stays_the_default():
    cfg = sparsity_config(scope="nm")
    assert isinstance(cfg, OneShotNM) and cfg.mode == "oneshot"
    assert isinstance(sparsity_config(mode="dynamic"), DynamicNM)  # dynamic implies scope nm
    assert isinstance(build_pruner(stack(8, 8, 8, 3), cfg, 10), MagnitudePruner)


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_loop_trains_dynamic_two_four_and_resumes_exactly(digits, tmp_path, monkeypatch):
    model = ModelConfig(name="mlp", params={"hidden": 32, "depth": 3})
    sparsity = sparsity_config(scope="nm", mode="dynamic", start=0.1, progressive=True, end=0.6)
    cfg = TrainConfig(
        epochs=6, batch_size=64, lr=0.1, sparsity=sparsity, eval_every=0, checkpoint_every=20,
        deterministic=True,
    )  # fmt: skip
    whole = train(digits, model, cfg, run_dir=tmp_path / "a", progress=False)
    report = whole.summary["sparsity"]
    assert report["mode"] == "dynamic" and report["sparsity"] == 0.5
    assert whole.summary["final_test_acc"] > 0.75  # dense 0.89, one-shot 2:4 0.88
    saved = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["state_dict"]
    for name in report["layers"]:
        assert (saved[name] == 0).float().mean().item() == 0.5
        assert nm_violations(saved[name], 2, 4) == 0

    real_step = DynamicNMPruner.step

    def crashing_step(self, step, optimizer=None):
        if step == 47:  # after the checkpoint at step 40, in the middle of the decay
            raise Crash
        real_step(self, step, optimizer)

    with monkeypatch.context() as patch:
        patch.setattr(DynamicNMPruner, "step", crashing_step)
        with pytest.raises(Crash):
            train(digits, model, cfg, run_dir=tmp_path / "b", progress=False)
    assert (tmp_path / "b" / RESUME_NAME).exists()
    resumed = train(digits, model, cfg, run_dir=tmp_path / "b", progress=False)
    assert resumed.summary["resumed_from_step"] == 40
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["sparsity"] == report
    assert resumed.summary["final_test_acc"] == whole.summary["final_test_acc"]
