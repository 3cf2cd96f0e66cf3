import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from datapruning.cli import main
from datapruning.config import (
    ModelConfig,
    TrainConfig,
    load_config,
    parse_config,
    sparsity_config,
)
from datapruning.data.sources import load_dataset
from datapruning.errors import ConfigError, DataPruningError
from datapruning.models import build_model
from datapruning.train.checkpoint import load_checkpoint
from datapruning.train.loop import train
from datapruning.train.sparsity import (
    MagnitudePruner,
    Schedule,
    build_pruner,
    cubic_sparsity,
    export_sparse,
    nm_violations,
    prunable_weights,
    select_weights,
    sparsity_report,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def stack(*widths: int) -> nn.Sequential:
    """Linear layers widths[0] -> widths[1] -> ... with ReLUs between."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def zeros(t: torch.Tensor) -> float:
    return (t == 0).float().mean().item()


def sgd_steps(model, pruner, steps, optimizer=None, first=1):
    optimizer = optimizer or torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3
    )
    in_features = next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features
    for step in range(first, first + steps):
        x = torch.randn(16, in_features)
        loss = F.cross_entropy(model(x), torch.randint(0, 3, (16,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step(step, optimizer)
        yield step, optimizer


# --- the schedule ----------------------------------------------------------


def test_cubic_schedule_values():
    assert cubic_sparsity(0, 0.1, 0.9, 10, 50) == 0.1
    assert cubic_sparsity(10, 0.1, 0.9, 10, 50) == pytest.approx(0.1)
    assert cubic_sparsity(50, 0.1, 0.9, 10, 50) == 0.9
    assert cubic_sparsity(80, 0.1, 0.9, 10, 50) == 0.9
    # Halfway: s_f + (s_i - s_f) * (1/2)^3.
    assert cubic_sparsity(30, 0.1, 0.9, 10, 50) == pytest.approx(0.9 - 0.8 / 8)
    values = [cubic_sparsity(t, 0.0, 0.8, 10, 50) for t in range(0, 60)]
    assert all(a <= b for a, b in itertools.pairwise(values))
    # Fast early, slow late: the first quarter prunes more than the last.
    assert values[20] - values[10] > values[50] - values[40]


def test_schedule_resolves_steps_and_fractions():
    s = Schedule.resolve(sparsity_config(target=0.5, start=0.1, end=0.5, every=0.05), 200)
    assert (s.start, s.end, s.every) == (20, 100, 10)
    s = Schedule.resolve(sparsity_config(target=0.5, start=7, end=30, every=10), 200)
    assert [t for t in range(0, 200) if s.updates_at(t)] == [7, 17, 27, 30]
    # A fraction too small for one step still updates every step.
    assert Schedule.resolve(sparsity_config(target=0.5, every=0.0001), 100).every == 1


def test_pruner_follows_the_schedule_and_ends_exactly_on_target():
    torch.manual_seed(0)
    model = stack(8, 64, 64, 64, 3)
    cfg = sparsity_config(target=0.9, initial=0.2, start=5, end=45, every=10)
    pruner = MagnitudePruner(model, cfg, total_steps=60)
    updates, levels = [], []
    for step, _ in sgd_steps(model, pruner, 60):
        if pruner.last_update == step:
            updates.append(step)
            levels.append(pruner.report()["sparsity"])
    assert updates == [5, 15, 25, 35, 45]
    expected = [cubic_sparsity(t, 0.2, 0.9, 5, 45) for t in updates]
    assert levels == pytest.approx(expected, abs=1 / (2 * 64 * 64))
    assert levels[-1] == pytest.approx(0.9, abs=1e-4)
    assert pruner.report()["sparsity"] == levels[-1]


def test_start_zero_prunes_at_initialisation():
    torch.manual_seed(0)
    model = stack(8, 32, 32, 3)
    pruner = MagnitudePruner(model, sparsity_config(target=0.5, initial=0.5, start=0, end=0), 10)
    assert pruner.report()["sparsity"] == pytest.approx(0.5)


# --- scopes ------------------------------------------------------------------


def test_global_scope_uses_one_threshold_across_layers():
    model = stack(4, 10, 10, 10, 2)
    with torch.no_grad():
        model[2].weight.fill_(1.0)  # large weights
        model[4].weight.copy_(torch.arange(1, 101, dtype=torch.float).view(10, 10) / 1000)
    cfg = sparsity_config(target=0.4, start=0, end=0, min_density=0.0)
    pruner = MagnitudePruner(model, cfg, 10)
    # 40% of 200 weights = 80, all taken from the small layer, smallest first.
    assert zeros(model[2].weight) == 0
    assert zeros(model[4].weight) == pytest.approx(0.8)
    assert (model[4].weight.flatten()[80:] != 0).all()
    assert set(pruner.masks) == {"2.weight", "4.weight"}


def test_global_floor_stops_a_layer_from_collapsing():
    model = stack(4, 10, 10, 10, 2)
    with torch.no_grad():
        model[2].weight.fill_(1.0)
        model[4].weight.fill_(1e-3)
    cfg = sparsity_config(target=0.6, start=0, end=0, min_density=0.25)
    MagnitudePruner(model, cfg, 10)
    # The small layer gives at most 75 weights; the other 45 come from the large one.
    assert zeros(model[4].weight) == pytest.approx(0.75)
    assert zeros(model[2].weight) == pytest.approx(0.45)
    with pytest.raises(DataPruningError, match="min_density"):
        MagnitudePruner(model, sparsity_config(target=0.9, min_density=0.2), 10)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=3, max_size=5),
    target=st.floats(0.05, 0.8),
    min_density=st.floats(0.0, 0.15),
    seed=st.integers(0, 1000),
)
def test_global_count_is_exact_and_respects_the_floor(sizes, target, min_density, seed):
    torch.manual_seed(seed)
    model = stack(*sizes)
    model.requires_grad_(False)
    # All layers, so that tiny stacks still have something to prune.
    cfg = sparsity_config(
        target=target, start=0, end=0, min_density=min_density, prune_first_last=True
    )
    weights = select_weights(model, cfg)
    size = sum(w.numel() for w in weights.values())
    try:
        MagnitudePruner(model, cfg, 1)
    except DataPruningError:
        floor = sum(max(1, math.ceil(min_density * w.numel())) for w in weights.values())
        assert round(target * size) > size - floor
        return
    pruned = sum(int((w == 0).sum()) for w in weights.values())
    assert pruned == round(target * size)
    for w in weights.values():
        assert int((w != 0).sum()) >= max(1, math.ceil(min_density * w.numel()))


def test_layer_scope_prunes_every_layer_alike():
    torch.manual_seed(0)
    model = stack(8, 40, 50, 30, 3)
    with torch.no_grad():
        model[2].weight.mul_(100)  # global would take nothing from this layer
    pruner = MagnitudePruner(model, sparsity_config(target=0.7, scope="layer", start=0, end=0), 5)
    for name, layer in pruner.report()["layers"].items():
        assert layer["sparsity"] == pytest.approx(round(0.7 * layer["size"]) / layer["size"]), name
    # Within a layer, every pruned weight was smaller than every kept one.
    w, mask = model[2].weight, pruner.masks["2.weight"]
    assert w[~mask].abs().max() == 0


def test_nm_masks_hold_n_of_every_m_along_the_input():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3), nn.Conv2d(16, 8, 1), nn.Flatten(), nn.Linear(8, 2)
    )
    original = model[1].weight.detach().clone()
    cfg = sparsity_config(scope="nm", start=0)
    pruner = MagnitudePruner(model, cfg, 10)
    report = pruner.report()
    assert set(report["layers"]) == {"1.weight", "2.weight"}
    for name, layer in report["layers"].items():
        assert layer["sparsity"] == 0.5, name
        assert nm_violations(dict(model.named_parameters())[name], 2, 4) == 0
    # Groups run over in_channels*kh*kw flattened per output channel; each keeps its top two.
    groups = original.reshape(16, -1, 4).abs()
    kept = model[1].weight.reshape(16, -1, 4) != 0
    top2 = groups.topk(2, dim=2).indices
    assert torch.equal(kept, torch.zeros_like(kept).scatter_(2, top2, True))


def test_nm_mask_is_fixed_at_start_and_survives_training():
    torch.manual_seed(0)
    model = stack(8, 32, 32, 32, 3)
    cfg = sparsity_config(scope="nm", n=1, m=4, start=5)
    pruner = MagnitudePruner(model, cfg, 30)
    masks = None
    for step, _ in sgd_steps(model, pruner, 30):
        if step < 5:
            assert not pruner.masks
        elif masks is None:
            masks = {k: v.clone() for k, v in pruner.masks.items()}
    assert all(torch.equal(masks[k], pruner.masks[k]) for k in masks)
    state = export_sparse(model, pruner)
    for name in pruner.masks:
        assert zeros(state[name]) == 0.75
        assert nm_violations(state[name], 1, 4) == 0


def test_nm_refuses_a_group_that_does_not_divide_the_width():
    model = stack(8, 32, 30, 32, 3)  # the middle layers' inputs: 32 and 30
    with pytest.raises(DataPruningError, match=r"m = 4 does not divide the input width 30") as info:
        MagnitudePruner(model, sparsity_config(scope="nm"), 10)
    assert "\n" not in str(info.value)
    # Excluding that layer makes the rest valid.
    MagnitudePruner(model, sparsity_config(scope="nm", exclude=[r"^4\."]), 10)


# --- which layers ------------------------------------------------------------


def test_first_and_last_layers_stay_dense_by_default():
    model = build_model("convnet1d", (40,), 10)
    names = [n for n, _ in prunable_weights(model)]
    assert names == ["features.0.weight", "features.2.weight", "features.4.weight",
                     "classifier.weight"]  # fmt: skip
    assert list(select_weights(model, sparsity_config(target=0.5))) == names[1:3]
    assert list(select_weights(model, sparsity_config(target=0.5, prune_first_last=True))) == names


def test_include_and_exclude_regexes():
    model = build_model("resnet18", (3, 16, 16), 10, width=4)
    cfg = sparsity_config(target=0.5, include=[r"blocks\.[67]\."], exclude=["shortcut"])
    assert list(select_weights(model, cfg)) == [
        "blocks.6.conv1.weight",
        "blocks.6.conv2.weight",
        "blocks.7.conv1.weight",
        "blocks.7.conv2.weight",
    ]
    # Biases, BatchNorm and the excluded stem/fc never get masks.
    vit = build_model("vit", (40,), 10, dim=16, depth=1, heads=2)
    assert list(select_weights(vit, sparsity_config(target=0.5))) == [
        "encoder.layers.0.self_attn.in_proj_weight",
        "encoder.layers.0.self_attn.out_proj.weight",
        "encoder.layers.0.linear1.weight",
        "encoder.layers.0.linear2.weight",
    ]
    with pytest.raises(DataPruningError, match=r"selects no layer.*features\.0\.weight"):
        select_weights(build_model("convnet1d", (40,), 10), sparsity_config(include=["nothing"]))


# --- exact zeros through the optimizer -----------------------------------------


@pytest.mark.parametrize("make_optimizer", ["sgd", "adamw"])
def test_pruned_weights_are_exactly_zero_after_every_step(make_optimizer):
    torch.manual_seed(0)
    model = stack(8, 32, 32, 32, 3)
    params = model.parameters()
    optimizer = (
        torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-3)
        if make_optimizer == "sgd"
        else torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    )
    cfg = sparsity_config(target=0.8, start=2, end=12, every=2)
    pruner = MagnitudePruner(model, cfg, 20)
    for step, opt in sgd_steps(model, pruner, 20, optimizer):
        for name, mask in pruner.masks.items():
            weight = pruner.weights[name]
            assert (weight[~mask] == 0).all() and not torch.signbit(weight[~mask]).any(), step
            for value in opt.state[weight].values():
                if value.shape == weight.shape:
                    assert (value[~mask] == 0).all(), step
    assert pruner.report()["sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_state_dict_round_trip_resumes_the_same_masks():
    torch.manual_seed(0)
    model = stack(8, 32, 32, 32, 3)
    cfg = sparsity_config(target=0.8, start=2, end=20, every=3)
    pruner = MagnitudePruner(model, cfg, 30)
    for _ in sgd_steps(model, pruner, 10):
        pass
    state = pruner.state_dict()
    assert state["last_update"] == 8

    copy = stack(8, 32, 32, 32, 3)
    copy.load_state_dict(model.state_dict())
    restored = MagnitudePruner(copy, cfg, 30)
    restored.load_state_dict(state)
    assert restored.masks.keys() == pruner.masks.keys()
    assert all(torch.equal(restored.masks[k], pruner.masks[k]) for k in state["masks"])
    assert restored.report() == pruner.report()
    # The next scheduled update continues from the same position.
    restored.step(11)
    pruner.step(11)
    assert restored.report() == pruner.report()
    assert restored.last_update == pruner.last_update == 11

    with pytest.raises(DataPruningError, match="sparsity settings differ"):
        MagnitudePruner(copy, cfg.model_copy(update={"target": 0.7}), 30).load_state_dict(state)
    with pytest.raises(DataPruningError, match="sparsity settings differ"):
        MagnitudePruner(copy, cfg, 40).load_state_dict(state)


@pytest.mark.parametrize("scope", ["global", "nm"])
def test_weight_rewinding_restores_the_early_weights_under_the_final_masks(scope):
    torch.manual_seed(0)
    model = stack(8, 32, 32, 32, 3)
    cfg = (
        sparsity_config(target=0.7, start=6, end=12, every=3, rewind=4)
        if scope == "global"
        else sparsity_config(scope="nm", start=6, rewind=4)
    )
    pruner = MagnitudePruner(model, cfg, 20)
    final = pruner.schedule.end
    assert final == (12 if scope == "global" else 6)
    for step, optimizer in sgd_steps(model, pruner, 20):
        if step == 4:
            early = {k: v.clone() for k, v in model.state_dict().items()}
        if step == final:
            assert pruner.rewind_state is None
            assert not optimizer.state  # momentum restarts
            state = model.state_dict()
            for name, value in state.items():
                mask = pruner.masks.get(name)
                expected = early[name] if mask is None else early[name].masked_fill(~mask, 0)
                assert torch.equal(value, expected), name
            masks = {k: v.clone() for k, v in pruner.masks.items()}
        elif step == final - 1:
            assert pruner.rewind_state is not None
            assert pruner.state_dict()["rewind_state"].keys() == model.state_dict().keys()
    # Training went on from the rewound weights, under the same masks.
    assert not torch.equal(model.state_dict()["0.weight"], early["0.weight"])
    assert all(torch.equal(masks[k], pruner.masks[k]) for k in masks)


def test_rewind_must_come_before_the_final_masks():
    with pytest.raises(DataPruningError, match=r"rewind \(15 steps\) comes after the final masks"):
        MagnitudePruner(stack(8, 32, 32, 3), sparsity_config(target=0.5, end=10, rewind=15), 20)
    with pytest.raises(DataPruningError, match="final masks at step 5"):
        MagnitudePruner(stack(8, 32, 32, 3), sparsity_config(scope="nm", start=5, rewind=0.5), 20)


def test_export_folds_the_masks_in():
    torch.manual_seed(0)
    model = stack(8, 32, 32, 3)
    pruner = MagnitudePruner(
        model, sparsity_config(target=0.5, start=0, end=0, prune_first_last=True), 5
    )
    with torch.no_grad():  # a weight revived behind the pruner's back
        model[0].weight.add_(1.0)
    state = export_sparse(model, pruner)
    assert torch.equal(state["0.weight"] == 0, ~pruner.masks["0.weight"])
    assert (model[0].weight != 0).all()  # the model itself is left alone
    assert state["0.bias"].data_ptr() != model[0].bias.data_ptr()
    assert export_sparse(model, None).keys() == model.state_dict().keys()


def test_build_pruner_is_off_by_default():
    model = stack(8, 32, 32, 3)
    assert build_pruner(model, sparsity_config(), 10) is None
    assert build_pruner(model, sparsity_config(scope="nm"), 10) is not None


# --- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sparsity", "fragment"),
    [
        ({"target": 1.5}, "train.sparsity.target: sparsity 1.5 must lie in [0, 1)"),
        ({"target": 1.0}, "must lie in [0, 1)"),
        ({"target": -0.1}, "must lie in [0, 1)"),
        ({"target": 0.5, "initial": 0.6}, "initial sparsity 0.6 exceeds target 0.5"),
        ({"include": ["("]}, "train.sparsity.include: '(' is not a valid regex"),
        ({"start": 1.5}, "fraction of training in [0, 1]"),
        ({"every": 0}, "every must be at least 1"),
        ({"scope": "nm", "target": 0.9}, "target applies to gradual magnitude"),
        ({"scope": "nm", "n": 4, "m": 4}, "n < m"),
        ({"n": 2}, "train.sparsity: n applies to one-shot N:M (scope nm) and dynamic N:M"),
        ({"scope": "block"}, "train.sparsity.scope"),
        ({"targte": 0.5}, "unknown key 'train.sparsity.targte'"),
    ],
)
def test_bad_sparsity_config_is_one_line(sparsity, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config({"train": {"sparsity": sparsity}})
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("sparsity", "fragment"),
    [
        ({"target": 0.5, "end": 100_000}, "sparsity.end = 100000 is past the run's last step"),
        ({"target": 0.5, "start": 30, "end": 20}, "comes before sparsity.start"),
    ],
)
def test_schedule_that_does_not_fit_the_run(sparsity, fragment):
    with pytest.raises(DataPruningError, match=fragment):
        MagnitudePruner(stack(8, 32, 32, 3), sparsity_config(**sparsity), 50)


# --- in the training loop and the CLI --------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_loop_prunes_and_saves_real_zeros(digits, tmp_path):
    sparsity = sparsity_config(target=0.8, start=0.0, end=0.5, every=5)
    cfg = TrainConfig(epochs=4, batch_size=32, lr=0.1, sparsity=sparsity, eval_every=0)
    result = train(
        digits, ModelConfig(name="mlp", params={"hidden": 64, "depth": 3}), cfg,
        run_dir=tmp_path, progress=False,
    )  # fmt: skip
    report = result.summary["sparsity"]
    assert report["scope"] == "global"
    assert set(report["layers"]) == {"net.3.weight", "net.5.weight"}
    assert report["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert result.summary["final_test_acc"] > 0.85  # dense: 0.93
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["state_dict"]
    for name, layer in report["layers"].items():
        assert zeros(saved[name]) == layer["sparsity"]
    assert zeros(saved["net.1.weight"]) == 0  # the first layer stays dense


def test_loop_without_sparsity_reports_none(digits):
    cfg = TrainConfig(epochs=1, batch_size=128, eval_every=0)
    result = train(digits, ModelConfig(name="mlp"), cfg, progress=False)
    assert result.summary["sparsity"] is None


def test_loop_two_four(digits, tmp_path):
    sparsity = sparsity_config(scope="nm", start=0.5)
    cfg = TrainConfig(epochs=2, batch_size=64, sparsity=sparsity, eval_every=0)
    result = train(digits, ModelConfig(name="mlp", params={"hidden": 32, "depth": 3}), cfg,
                   run_dir=tmp_path, progress=False)  # fmt: skip
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["state_dict"]
    for name in result.summary["sparsity"]["layers"]:
        assert zeros(saved[name]) == 0.5
        assert nm_violations(saved[name], 2, 4) == 0


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "dataset: {name: digits}\nmodel: {name: mlp, params: {hidden: 30, depth: 3}}\n"
        "train: {epochs: 1, batch_size: 128}\n"
    )
    return path


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["train.sparsity.target=1.5"], "sparsity 1.5 must lie in [0, 1)"),
        (["train.sparsity.scope=nm"], "m = 4 does not divide the input width 30"),
        (["train.sparsity.include=['(']"], "is not a valid regex"),
        (["train.sparsity.target=0.5", "train.sparsity.end=99999"], "is past the run's last step"),
    ],
)
def test_cli_bad_sparsity_exits_2_and_leaves_the_run_dir(
    capsys, tmp_path, config_file, overrides, fragment
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    argv = ["train", str(config_file), "--out", str(out)]
    for override in overrides:
        argv += ["--set", override]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert (out / "summary.json").read_text() == "{}"


def test_cli_trains_sparse(capsys, tmp_path, config_file):
    out = tmp_path / "run"
    argv = ["train", str(config_file), "--out", str(out), "--set", "train.sparsity.target=0.6"]
    assert main(argv) == 0
    saved = load_checkpoint(out / "checkpoint.pt")["state_dict"]
    pruned = sum(int((saved[n] == 0).sum()) for n in ("net.3.weight", "net.5.weight"))
    assert pruned == round(0.6 * 2 * 30 * 30)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sparsity"]["sparsity"] == pytest.approx(0.6)
    assert summary["config"]["train"]["sparsity"]["target"] == 0.6


@pytest.mark.parametrize(
    ("name", "shape", "params"),
    [
        ("resnet18", (3, 8, 8), {"width": 4}),
        ("vit", (3, 8, 8), {"dim": 16, "depth": 1, "heads": 2, "patch_size": 4}),
    ],
)
@pytest.mark.parametrize("scope", ["global", "nm"])
def test_new_models_prune_through_training(name, shape, params, scope):
    torch.manual_seed(0)
    model = build_model(name, shape, 3, **params)
    cfg = (
        sparsity_config(target=0.8, start=1, end=3)
        if scope == "global"
        else sparsity_config(scope="nm", start=1)
    )
    pruner = MagnitudePruner(model, cfg, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(1, 5):
        loss = F.cross_entropy(model(torch.randn(8, *shape)), torch.randint(0, 3, (8,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step(step, optimizer)
    state = export_sparse(model, pruner)
    report = sparsity_report(state, list(pruner.masks))
    assert report["sparsity"] == pytest.approx(pruner.final_sparsity, abs=1e-3)
    if scope == "nm":
        assert all(nm_violations(state[n], 2, 4) == 0 for n in pruner.masks)
    assert torch.isfinite(model(torch.randn(2, *shape))).all()


def test_cli_run_refuses_bad_sparsity_before_any_work(capsys, config_file):
    argv = ["run", str(config_file), "--set", "train.sparsity.target=1.5"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "error: " + err.removeprefix("error: ").splitlines()[0] + "\n"
    assert "train.sparsity.target: sparsity 1.5 must lie in [0, 1)" in err


@pytest.mark.slow
def test_acceptance_on_mnist1d(tmp_path):
    """configs/sparse.yaml: GMP to 90% global within 2 points of dense on the mean of seeds
    0 and 1; 2:4 exact (seed 0). One seed's gap is not the claim: it moves by a point or
    more between seeds and machines (seed 0: 2.1 points on the AMD EPYC of 2026-12-07,
    inside 2 in earlier CI runs; bench/sparsity.py measures the mean of three)."""
    config = Path(__file__).parents[2] / "configs" / "sparse.yaml"
    runs = {
        "dense": ["train.sparsity.target=0"],
        "gmp": [],
        "nm": ["train.sparsity={scope: nm, start: 0.1}"],
        "dense-1": ["train.sparsity.target=0", "train.seed=1"],
        "gmp-1": ["train.seed=1"],
    }
    results = {}
    for name, overrides in runs.items():
        cfg = load_config(config, [*overrides, "train.eval_every=0"])
        data = load_dataset(cfg.dataset.name, cfg.dataset.params)
        results[name] = train(data, cfg.model, cfg.train, run_dir=tmp_path / name, progress=False)
    assert results["dense"].summary["sparsity"] is None
    for name, nonzero_share in (("gmp", 0.1), ("nm", 0.5)):
        saved = load_checkpoint(tmp_path / name / "checkpoint.pt")["state_dict"]
        layers = list(results[name].summary["sparsity"]["layers"])
        assert layers == ["features.2.weight", "features.4.weight"]
        report = sparsity_report(saved, layers)
        assert report["sparsity"] == pytest.approx(1 - nonzero_share, abs=0.005)
    for layer in report["layers"].values():
        assert layer["sparsity"] == 0.5
    assert all(nm_violations(saved[n], 2, 4) == 0 for n in layers)
    accuracy = {name: result.summary["final_test_acc"] for name, result in results.items()}
    dense = (accuracy["dense"] + accuracy["dense-1"]) / 2
    gmp = (accuracy["gmp"] + accuracy["gmp-1"]) / 2
    assert dense > 0.88
    assert gmp > dense - 0.02, accuracy
