"""Bit-for-bit comparison of two models' weights (resume, kernels and loop-mode tests)."""

from __future__ import annotations

import torch


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
