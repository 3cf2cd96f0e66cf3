"""Probe, then trust: injected compile, launch and result failures fall back to the reference.

Under Triton's interpreter a kernel is "compiled" and launched by
``kernel[grid](...)``; the tests replace that launch with one that raises (a
compile-style failure on the first launch, which is the probe's; a launch-style
one after a good probe) or that writes wrong values, and check that the call
gives the reference's result, warns once, and that :func:`paths_taken` records
the path that ran and why.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from datapruning.kernels import (
    _dispatch,
    forced_backend,
    masked_optim,
    masks,
    paths_taken,
    reset_paths,
)
from datapruning.kernels import kd_loss as kd_module
from datapruning.kernels.kd_loss import kd_loss
from datapruning.kernels.masked_optim import MaskedAdamW, MaskedSGD

pytest.importorskip("triton")

INJECTS_FAILURES = True  # tests/kernels/conftest.py: failed probes are this module's intent


class Launches:
    """Stands in for a jitted kernel: ``kernel[grid](...)`` launches the real one until
    ``fail_from`` launches have run, then raises (or, with ``corrupt``, runs and then
    spoils the output argument ``corrupt`` names)."""

    def __init__(self, real: Any, fail_from: int = 0, corrupt: int | None = None) -> None:
        self.real, self.fail_from, self.corrupt, self.calls = real, fail_from, corrupt, 0

    def __getitem__(self, grid: Any) -> Any:
        def launch(*args: Any, **kwargs: Any) -> None:
            self.calls += 1
            if self.corrupt is not None:
                self.real[grid](*args, **kwargs)
                args[self.corrupt].fill_(1)
                return
            if self.calls > self.fail_from:
                raise RuntimeError(f"injected failure at launch {self.calls}")
            self.real[grid](*args, **kwargs)

        return launch


def kd_inputs(batch: int = 9, classes: int = 10, seed: int = 0) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "student_logits": torch.randn(batch, classes, generator=gen),
        "targets": torch.randint(0, classes, (batch,), generator=gen),
        "teacher_logits": torch.randn(2 * batch, classes, generator=gen),
        "index": torch.randperm(2 * batch, generator=gen)[:batch],
    }


def kd_run(backend: str, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    student = inputs["student_logits"].clone().requires_grad_()
    with forced_backend(backend):
        loss = kd_loss(
            student,
            inputs["targets"],
            inputs["teacher_logits"],
            inputs["index"],
            alpha=0.5,
            temperature=2.0,
        )
    loss.sum().backward()
    return loss.detach(), student.grad


def test_a_good_kernel_is_probed_once_and_recorded_as_triton(monkeypatch):
    probes = []
    real = kd_module._probe
    monkeypatch.setattr(
        kd_module, "_probe", lambda variant: probes.append(variant) or real(variant)
    )
    for seed in range(3):
        kd_run("triton", kd_inputs(seed=seed))
    assert len(probes) == 1
    assert paths_taken() == {"kd_loss": {"path": "triton", "reason": _dispatch.PROBED}}


def test_kd_compile_failure_falls_back_warns_once_and_records_why(monkeypatch):
    broken = Launches(kd_module._kd_loss_kernel)
    monkeypatch.setattr(kd_module, "_kd_loss_kernel", broken)
    inputs = kd_inputs()
    with pytest.warns(RuntimeWarning, match="kd_loss .*probe failed: RuntimeError: injected"):
        got = kd_run("triton", inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per variant
        again = kd_run("triton", inputs)
    want = kd_run("torch", inputs)
    for g, a, w in zip(got, again, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(a, w, atol=1e-6, rtol=1e-6)
    assert broken.calls == 1  # the failed variant is not launched again
    taken = paths_taken()["kd_loss"]
    assert taken["path"] == "torch+triton" or taken["path"] == "torch"
    assert "probe failed: RuntimeError: injected failure at launch 1" in taken["reason"]


def test_kd_launch_failure_after_a_good_probe_falls_back_for_that_call(monkeypatch):
    broken = Launches(kd_module._kd_loss_kernel, fail_from=1)  # the probe's launch works
    monkeypatch.setattr(kd_module, "_kd_loss_kernel", broken)
    inputs = kd_inputs()
    with pytest.warns(RuntimeWarning, match="launch failed"):
        got = kd_run("triton", inputs)
    want = kd_run("torch", inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)
    reset_paths()
    kd_run("triton", inputs)
    assert broken.calls == 2
    assert paths_taken()["kd_loss"]["path"] == "torch"
    assert paths_taken()["kd_loss"]["reason"].startswith("launch failed: RuntimeError: injected")


def test_kd_wrong_results_are_caught_by_the_probe(monkeypatch):
    # Argument 7 of the kernel is the loss output: spoiled after each launch.
    monkeypatch.setattr(
        kd_module, "_kd_loss_kernel", Launches(kd_module._kd_loss_kernel, corrupt=7)
    )
    inputs = kd_inputs()
    with pytest.warns(RuntimeWarning, match="probe mismatch: loss differs"):
        got = kd_run("triton", inputs)
    torch.testing.assert_close(got[0], kd_run("torch", inputs)[0], atol=1e-6, rtol=1e-6)
    assert paths_taken()["kd_loss"]["reason"].startswith("probe mismatch: loss differs")


def test_each_variant_is_probed_on_its_own(monkeypatch):
    probes = []
    real = kd_module._probe
    monkeypatch.setattr(
        kd_module, "_probe", lambda variant: probes.append(variant) or real(variant)
    )
    kd_run("triton", kd_inputs(classes=10))
    kd_run("triton", kd_inputs(classes=33))
    inputs = kd_inputs(classes=10)
    with forced_backend("triton"), torch.no_grad():  # no gradient: another compiled kernel
        kd_loss(**inputs, alpha=0.5, temperature=2.0)
    assert [(v[6], v[5]) for v in probes] == [(10, True), (33, True), (10, False)]


def test_the_reference_path_says_why():
    kd_run("torch", kd_inputs())
    assert paths_taken()["kd_loss"] == {"path": "torch", "reason": "DATAPRUNING_KERNELS=torch"}
    reset_paths()
    kd_run("auto", kd_inputs())
    assert paths_taken()["kd_loss"]["reason"] == "CPU tensors: the Triton path is for CUDA"


def sgd_params(seed: int = 0) -> tuple[list[nn.Parameter], dict[nn.Parameter, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(n, generator=gen)) for n in (7, 1500)]
    return params, {params[1]: torch.rand(1500, generator=gen) < 0.3}


def optimizer_run(
    cls: type, backend: str, steps: int, **kwargs: Any
) -> tuple[list[nn.Parameter], torch.optim.Optimizer]:
    params, keep = sgd_params()
    opt = cls(params, masks=keep, **kwargs)
    gen = torch.Generator().manual_seed(1)
    with forced_backend(backend):
        for _ in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
    return params, opt


def assert_same_run(a: tuple[list[nn.Parameter], Any], b: tuple[list[nn.Parameter], Any]) -> None:
    (params_a, opt_a), (params_b, opt_b) = a, b
    for pa, pb in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(pa.detach(), pb.detach(), atol=1e-6, rtol=1e-6)
        assert opt_a.state[pa].keys() == opt_b.state[pb].keys()
        for key, value in opt_b.state[pb].items():
            torch.testing.assert_close(opt_a.state[pa][key], value, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("cls", "kernel", "kwargs"),
    [
        (MaskedSGD, "_sgd_kernel", {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2}),
        (MaskedAdamW, "_adamw_kernel", {"lr": 1e-2}),
    ],
)
@pytest.mark.parametrize("fail_from", [0, 1, 3], ids=["compile", "first-launch", "third-launch"])
def test_a_failing_optimizer_kernel_leaves_the_state_the_reference_expects(
    monkeypatch, cls, kernel, kwargs, fail_from
):
    # fail_from 0: the probe's launch raises; 1: the probe runs, the first real launch
    # raises (fresh state must not be half made); 3: two steps on the kernel first.
    # The first step of SGD with momentum is its own variant (FIRST), probed apart.
    broken = Launches(getattr(masked_optim, kernel), fail_from=fail_from)
    monkeypatch.setattr(masked_optim, kernel, broken)
    with pytest.warns(RuntimeWarning, match="masked_"):
        got = optimizer_run(cls, "triton", steps=4, **kwargs)
    want = optimizer_run(cls, "torch", steps=4, **kwargs)
    assert_same_run(got, want)
    name = "masked_sgd" if cls is MaskedSGD else "masked_adamw"
    assert "injected failure" in paths_taken()[name]["reason"]
    if cls is MaskedAdamW:
        assert all(float(got[1].state[p]["step"]) == 4 for p in got[0])


def test_the_address_table_is_built_once_for_a_steady_loop(monkeypatch):
    # No host-to-device table per step: count the host-side table builds (torch.tensor
    # calls from masked_optim, and Tensor.to calls there) over steps 2 to 10, with the
    # gradients written in place as zero_grad(set_to_none=False) leaves them.
    params, keep = sgd_params()
    opt = MaskedSGD(params, lr=0.1, momentum=0.9, masks=keep)
    for p in params:
        p.grad = torch.zeros_like(p)
    calls: list[str] = []
    real_tensor, real_to = torch.tensor, torch.Tensor.to

    def from_here() -> bool:
        return sys._getframe(2).f_globals.get("__name__") == masked_optim.__name__

    def counting_tensor(*args: Any, **kwargs: Any) -> torch.Tensor:
        if from_here():
            calls.append("tensor")
        return real_tensor(*args, **kwargs)

    def counting_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if from_here():
            calls.append("to")
        return real_to(self, *args, **kwargs)

    gen = torch.Generator().manual_seed(0)
    with forced_backend("triton"):
        for step in range(10):
            for p in params:
                p.grad.copy_(torch.randn(p.shape, generator=gen))
            if step == 2:  # steps 0 and 1: the FIRST and the steady variant's tables
                monkeypatch.setattr(torch, "tensor", counting_tensor)
                monkeypatch.setattr(torch.Tensor, "to", counting_to)
            opt.step()
    monkeypatch.undo()
    assert calls == []
    assert opt._addresses.builds == 2
    assert paths_taken()["masked_sgd"]["path"] == "triton"


def test_nm_mask_mismatch_falls_back_to_the_reference(monkeypatch):
    monkeypatch.setattr(masks, "_nm_kernel", Launches(masks._nm_kernel, corrupt=1))
    weight = torch.randn(8, 16)
    with (
        forced_backend("triton"),
        pytest.warns(RuntimeWarning, match="nm_mask.*mask entries differ"),
    ):
        got = masks.nm_mask(weight, 2, 4)
    assert torch.equal(got, masks.nm_mask_reference(weight, 2, 4))
    assert paths_taken()["nm_mask"]["path"] == "torch"


def test_nm_mask_launch_failure_falls_back(monkeypatch):
    monkeypatch.setattr(masks, "_nm_kernel", Launches(masks._nm_kernel, fail_from=1))
    weight = torch.randn(8, 16)
    with forced_backend("triton"), pytest.warns(RuntimeWarning, match="launch failed"):
        got = masks.nm_mask(weight, 2, 4)
    assert torch.equal(got, masks.nm_mask_reference(weight, 2, 4))


def test_select_takes_radix_through_the_dispatcher_and_falls_back(monkeypatch):
    values = torch.randn(1000)
    with forced_backend("triton"):
        got = masks.kth_smallest(values, 17)
    assert got == values.kthvalue(17).values
    assert paths_taken()["select"] == {"path": "radix", "reason": _dispatch.PROBED}
    with forced_backend("torch"):
        masks.kth_smallest(values, 17)
    assert paths_taken()["select"]["path"] == "kthvalue+radix"

    _dispatch.reset_probes()

    def broken(values: torch.Tensor, k: int) -> torch.Tensor:
        raise RuntimeError("injected")

    monkeypatch.setattr(masks, "radix_kth_smallest", broken)
    with forced_backend("triton"), pytest.warns(RuntimeWarning, match="select"):
        got = masks.kth_smallest(values, 17)
    assert got == values.kthvalue(17).values
    assert paths_taken()["select"]["path"] == "kthvalue"


def test_a_train_run_with_every_kernel_broken_finishes_with_the_reference(monkeypatch):
    from datapruning.config import KDConfig, ModelConfig, TrainConfig, sparsity_config
    from datapruning.data.sources import load_dataset
    from datapruning.train.loop import train

    digits = load_dataset("digits")
    model = ModelConfig(name="mlp", params={"hidden": 16})
    kd = KDConfig(alpha=0.5, temperature=2.0)
    runs = {}
    for name, sparsity in {
        "gmp": sparsity_config(target=0.8, scope="global", start=0.2, end=0.8, every=2),
        "dynamic": sparsity_config(scope="nm", n=2, m=4, mode="dynamic", start=0),
    }.items():
        cfg = TrainConfig(steps=4, batch_size=128, lr=0.1, momentum=0.9, sparsity=sparsity, seed=0)
        for path in ("broken", "torch"):
            torch.manual_seed(0)
            teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
            with monkeypatch.context() as patch:
                if path == "broken":  # a compile error in KD and N:M, a launch error in SGD
                    patch.setattr(kd_module, "_kd_loss_kernel", Launches(kd_module._kd_loss_kernel))
                    patch.setattr(masks, "_nm_kernel", Launches(masks._nm_kernel))
                    patch.setattr(
                        masked_optim,
                        "_sgd_kernel",
                        Launches(masked_optim._sgd_kernel, fail_from=1),
                    )
                reset_paths()
                with (
                    warnings.catch_warnings(),
                    forced_backend("triton" if path == "broken" else "torch"),
                ):
                    warnings.simplefilter("ignore", RuntimeWarning)
                    runs[name, path] = (
                        train(digits, model, cfg, teacher=teacher, kd=kd),
                        paths_taken(),
                    )
            _dispatch.reset_probes()
        (broken, taken), (reference, _) = runs[name, "broken"], runs[name, "torch"]
        a, b = broken.model.state_dict(), reference.model.state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
        assert taken["kd_loss"]["path"] == "torch"
        assert taken["kd_loss"]["reason"].startswith("probe failed: RuntimeError: injected")
        if name == "dynamic":
            assert taken["nm_mask"]["path"] == "torch"
            assert taken["nm_mask"]["reason"].startswith("probe failed")
        else:
            assert taken["masked_sgd"]["path"] == "torch"
            assert "launch failed: RuntimeError: injected" in taken["masked_sgd"]["reason"]
            assert taken["select"]["path"] == "radix"
