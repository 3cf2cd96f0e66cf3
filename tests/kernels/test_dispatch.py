import pytest
import torch

from datapruning.errors import DataPruningError
from datapruning.kernels import _dispatch
from datapruning.kernels._dispatch import forced_backend, use_triton


def test_auto_takes_the_reference_for_cpu_tensors():
    with forced_backend("auto"):
        assert not use_triton(torch.zeros(2))


def test_forced_backends():
    x = torch.zeros(2)
    with forced_backend("torch"):
        assert not use_triton(x)
    with forced_backend("triton"):
        assert use_triton(x)  # the tests run with TRITON_INTERPRET=1


def test_forced_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with forced_backend("triton"), pytest.raises(DataPruningError, match="TRITON_INTERPRET=1"):
        use_triton(torch.zeros(2))


def test_a_bad_backend_is_refused(monkeypatch):
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "cuda")
    with pytest.raises(DataPruningError, match="DATAPRUNING_KERNELS='cuda'"):
        _dispatch._from_env()
    with pytest.raises(DataPruningError, match="unknown"), forced_backend("fast"):
        pass
