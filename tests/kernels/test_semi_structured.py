"""2:4 semi-structured training: fallback reasons and wiring on CPU, the kernels on CUDA."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datapruning.config import sparsity_config
from datapruning.errors import DataPruningError
from datapruning.kernels import semi_structured as semi
from datapruning.kernels.masks import nm_mask as _nm_mask
from datapruning.train.sparsity import build_pruner, export_sparse, nm_violations

SEMI = {"scope": "nm", "mode": "dynamic", "start": 0, "kernel": "semi_structured"}


def mlp(*widths: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_reasons_name_what_blocks_the_sparse_path():
    assert "CUDA-only" in semi.device_reason("cpu")
    assert "bf16/fp16" in semi.dtype_reason(torch.float32)
    assert "train.precision" in semi.dtype_reason(torch.float32)
    assert semi.dtype_reason(torch.bfloat16) is None
    assert semi.dtype_reason(torch.float16) is None
    assert semi.layer_reason(nn.Linear(128, 64)) is None
    assert "multiples of 64" in semi.layer_reason(nn.Linear(100, 64))
    assert "64x100" in semi.layer_reason(nn.Linear(100, 64))
    assert "Conv1d" in semi.layer_reason(nn.Conv1d(64, 64, 1))
    attention = nn.MultiheadAttention(64, 4)
    assert "MultiheadAttention" in semi.layer_reason(attention.out_proj, attention)


def test_on_cpu_every_layer_keeps_the_dense_path_and_says_why():
    model = mlp(64, 128, 128, 64)
    keys = list(model.state_dict())
    pruner = build_pruner(model, sparsity_config(**SEMI, prune_first_last=True), 10)
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    assert list(model.state_dict()) == keys
    kernels = pruner.report()["kernels"]
    assert set(kernels) == {"0.weight", "2.weight", "4.weight"}
    assert all(d["kernel"] == "dense" and "CUDA-only" in d["reason"] for d in kernels.values())
    out = model(torch.randn(3, 64))  # the dense masked path still trains
    out.sum().backward()
    assert pruner.report()["sparsity"] == 0.5


def test_a_layer_that_cannot_take_two_four_is_skipped_or_refused_when_included():
    model = mlp(64, 100, 64, 3)  # 0.weight is 100x64: not a multiple of 64
    pruner = build_pruner(model, sparsity_config(**SEMI, prune_first_last=True), 10)
    assert "multiples of 64" in pruner.kernel_decisions["0.weight"]["reason"]
    cfg = sparsity_config(**SEMI, prune_first_last=True, include=[r"^0\."])
    with pytest.raises(DataPruningError, match=r"cannot take 0\.weight") as info:
        build_pruner(mlp(64, 100, 64, 3), cfg, 10)
    assert "\n" not in str(info.value)
    assert "sparsity.include" in str(info.value)


@pytest.fixture()
def fake_gpu(monkeypatch):
    """Pretend the device can run 2:4, with the kernel replaced by its masked-dense meaning."""
    calls = []

    def fake_linear(x, weight, bias=None, decay=0.0, on_mask=None):
        mask = _nm_mask(weight, 2, 4)
        if on_mask is not None:
            on_mask(mask)
        calls.append({"weight": weight, "decay": decay, "dtype": x.dtype})
        return F.linear(x, (weight * mask).to(x.dtype), None if bias is None else bias.to(x.dtype))

    monkeypatch.setattr(semi, "device_reason", lambda device: None)
    monkeypatch.setattr(semi, "semi_structured_linear", fake_linear)
    monkeypatch.setattr(semi, "tile_mask", lambda weight, bitmask=None: _nm_mask(weight, 2, 4))
    return calls


def test_fp32_compute_falls_back_at_the_first_forward(fake_gpu):
    model = mlp(64, 128, 64)
    pruner = build_pruner(model, sparsity_config(**SEMI, prune_first_last=True), 10)
    assert all(isinstance(m, semi.SemiStructuredLinear) for m in (model[0], model[2]))
    model(torch.randn(4, 64))
    decision = pruner.kernel_decisions["0.weight"]
    assert decision["kernel"] == "dense" and "float32" in decision["reason"]
    assert not fake_gpu


@pytest.mark.parametrize(("sparse_ms", "kernel"), [(0.5, "semi_structured"), (2.0, "dense")])
def test_each_shape_is_timed_once_and_the_faster_path_kept(
    fake_gpu, monkeypatch, sparse_ms, kernel
):
    timings = []

    def fake_time(rows, in_features, out_features, dtype, device, repeats=10):
        timings.append((rows, in_features, out_features, dtype))
        return sparse_ms, 1.0

    monkeypatch.setattr(semi, "time_layer", fake_time)
    torch.manual_seed(0)
    model = mlp(64, 64, 64, 64).to(torch.bfloat16)
    keys = list(model.state_dict())
    pruner = build_pruner(
        model, sparsity_config(**SEMI, prune_first_last=True, sr_ste_decay=1e-3), 10
    )
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    model(x).float().sum().backward()
    assert timings == [(8, 64, 64, torch.bfloat16)]  # three layers, one shape, one timing
    decisions = pruner.report()["kernels"]
    assert {d["kernel"] for d in decisions.values()} == {kernel}
    assert all(("not faster" in d["reason"]) == (kernel == "dense") for d in decisions.values())
    assert list(model.state_dict()) == keys
    if kernel == "semi_structured":
        # The kernel gets the dense Parameter itself (not a masked copy) and SR-STE's λ.
        assert [c["weight"] for c in fake_gpu] == [model[i].weight for i in (0, 2, 4)]
        assert all(isinstance(c["weight"], nn.Parameter) for c in fake_gpu)
        assert {c["decay"] for c in fake_gpu} == {1e-3}
    else:
        assert not fake_gpu
    exported = export_sparse(model, pruner)
    assert all(nm_violations(exported[n], 2, 4) == 0 for n in pruner.weights)
    pruner.close()
    assert all(type(m) is nn.Linear for m in model if isinstance(m, nn.Linear))
    assert list(model.state_dict()) == keys


# --- the real kernels (CUDA sm80+) -------------------------------------------------

cuda = pytest.mark.cuda


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [256, 100])  # 100: padded to a multiple of 8
def test_sparse_linear_matches_the_dense_masked_product(dtype, rows):
    if reason := semi.device_reason("cuda"):
        pytest.skip(reason)
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(rows, 512, device="cuda", dtype=dtype, generator=gen, requires_grad=True)
    weight = torch.randn(256, 512, device="cuda", generator=gen, requires_grad=True)
    bias = torch.randn(256, device="cuda", generator=gen, requires_grad=True)
    grad = torch.randn(rows, 256, device="cuda", dtype=dtype, generator=gen)
    out = semi.semi_structured_linear(x, weight, bias, decay=0.1)
    out.backward(grad)

    mask = semi.tile_mask(weight.detach().to(dtype))
    assert nm_violations(mask, 2, 4) == 0 and nm_violations(mask.t(), 2, 4) == 0
    assert mask.float().mean().item() == 0.5
    w = weight.detach().to(dtype).float() * mask
    xf, gf = x.detach().float(), grad.float()
    scale = {torch.bfloat16: 3e-2, torch.float16: 5e-3}[dtype]
    ref = xf @ w.t() + bias.detach()
    assert (out.float() - ref).abs().max().item() <= scale * ref.abs().max().item()
    ref_dx = gf @ w
    assert (x.grad.float() - ref_dx).abs().max().item() <= scale * ref_dx.abs().max().item()
    ref_dw = gf.t() @ xf + 0.1 * weight.detach() * ~mask
    assert (weight.grad - ref_dw).abs().max().item() <= scale * ref_dw.abs().max().item()
    assert torch.allclose(bias.grad, gf.sum(0), rtol=scale, atol=scale)


@cuda
def test_dynamic_two_four_trains_on_the_gpu_under_autocast():
    if reason := semi.device_reason("cuda"):
        pytest.skip(reason)
    torch.manual_seed(0)
    model = mlp(256, 1024, 1024, 256).cuda()
    pruner = build_pruner(model, sparsity_config(**SEMI, prune_first_last=True), 20)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(2048, 256, device="cuda"), torch.randn(2048, 256, device="cuda")
    losses = []
    for step in range(1, 21):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.mse_loss(model(x).float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step(step, optimizer)
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    decisions = pruner.report()["kernels"]
    assert set(decisions) == {"0.weight", "2.weight", "4.weight"}
    assert all("ms" in d["reason"] and d["dtype"] == "bfloat16" for d in decisions.values())
    exported = export_sparse(model, pruner)
    for name in pruner.weights:
        assert nm_violations(exported[name], 2, 4) == 0
        assert (exported[name] == 0).float().mean().item() >= 0.5


def test_decide_before_run_times_each_shape_once_outside_training(fake_gpu, monkeypatch):
    timings = []

    def fake_time(rows, in_features, out_features, dtype, device, repeats=10):
        timings.append((rows, in_features, out_features, dtype))
        return 0.5, 1.0

    monkeypatch.setattr(semi, "time_layer", fake_time)
    model = mlp(64, 64, 128, 64).to(torch.bfloat16)
    model.train()
    pruner = build_pruner(model, sparsity_config(**SEMI, prune_first_last=True), 10)
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    made = semi.decide_before_run(model, x)
    # three shapes, one timing each, all before the first training forward
    assert timings == [
        (8, 64, 64, torch.bfloat16),
        (8, 64, 128, torch.bfloat16),
        (8, 128, 64, torch.bfloat16),
    ]
    assert set(made) == {"0.weight", "2.weight", "4.weight"}
    assert all(d["kernel"] == "semi_structured" for d in made.values())
    assert pruner.kernel_decisions == made
    assert all(m.training for m in model.modules())  # the modes are restored
    model(x).float().sum().backward()  # the first training step times nothing
    assert len(timings) == 3 and len(fake_gpu) == 3
    assert semi.decide_before_run(model, x) == {}  # decided already


def test_decide_before_run_reads_the_autocast_compute_dtype(fake_gpu, monkeypatch):
    monkeypatch.setattr(semi, "time_layer", lambda *args, **kwargs: (2.0, 1.0))
    model = mlp(64, 64)
    build_pruner(model, sparsity_config(**SEMI, prune_first_last=True), 10)
    made = semi.decide_before_run(model, torch.randn(4, 64))
    assert "float32" in made["0.weight"]["reason"]
    model = mlp(64, 64)
    build_pruner(model, sparsity_config(**SEMI, prune_first_last=True), 10)
    made = semi.decide_before_run(model, torch.randn(4, 64), autocast=torch.bfloat16)
    assert made["0.weight"]["kernel"] == "dense" and "not faster" in made["0.weight"]["reason"]


def test_an_undecided_layer_inside_a_compile_trace_takes_dense_without_timing(
    fake_gpu, monkeypatch
):
    monkeypatch.setattr(semi, "time_layer", lambda *args, **kwargs: pytest.fail("timed"))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    model = mlp(64, 64).to(torch.bfloat16)
    pruner = build_pruner(model, sparsity_config(**SEMI, prune_first_last=True), 10)
    model(torch.randn(4, 64, dtype=torch.bfloat16))
    assert pruner.kernel_decisions["0.weight"] == {"kernel": "dense", "reason": semi.NOT_TIMED}


def test_a_timing_that_raises_keeps_the_dense_path(fake_gpu, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUSPARSE_STATUS_NOT_SUPPORTED")

    monkeypatch.setattr(semi, "time_layer", broken)
    model = mlp(64, 64).to(torch.bfloat16)
    build_pruner(model, sparsity_config(**SEMI, prune_first_last=True), 10)
    made = semi.decide_before_run(model, torch.randn(4, 64, dtype=torch.bfloat16))
    assert made["0.weight"]["kernel"] == "dense"
    assert "failed when timed: RuntimeError: CUSPARSE" in made["0.weight"]["reason"]
