"""Every Triton kernel compiles ahead of time for sm_80 and sm_90, fp32 and bf16, without spills.

The installed Triton ships ptxas and cuobjdump, so this needs no GPU. The
default run compiles a representative subset (the register-heavy KD row tile,
a multi-block KD row, the masked SGD and AdamW steps and the 2:4 mask: 20
compiles into a fresh Triton cache, 15-22 s on the shared 2-core machine);
``-m aot_all`` compiles all 136 launch variants the wrappers use (57 s there).
Registers per variant go to the test's output (``-rA``) and, from the module's
CLI, to bench/results/kernels_aot.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

# Local-memory bytes a variant may use: the kernels keep everything in registers.
SPILL_BOUND = 16
# KD at C <= 128 must leave room for several programs per SM (65 536 registers, 256
# threads a program at 8 warps): at most 128 registers a thread.
KD_SMALL_C_REGISTERS = 128


def compile_all(cache: str, *args: str) -> list[dict]:
    # The compiler needs the real @triton.jit (no interpreter); a fresh cache, so every
    # variant is compiled here, not read back from an earlier run.
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": cache}
    done = subprocess.run(
        [sys.executable, "-m", "datapruning.kernels._aot", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert results, f"no results; stderr: {done.stderr[-2000:]}"
    return results


def check(results: list[dict]) -> None:
    for r in results:
        print(
            f"{r['kernel']:13} sm_{r['arch']} {r['dtype']} {r['name']:42} "
            f"registers {r['registers']} spills {r['spill_bytes']} B  {r['seconds']:.1f} s"
        )
    errors = [
        f"{r['kernel']} {r['name']} sm_{r['arch']} {r['dtype']}: {r['error']}"
        for r in results
        if r["error"]
    ]
    assert not errors, "\n".join(errors)
    spills = [r for r in results if r["spill_bytes"] > SPILL_BOUND]
    assert not spills, spills
    heavy = [
        r
        for r in results
        if r["kernel"] == "kd_loss"
        and int(r["name"].split()[0].removeprefix("C=")) <= 128
        and r["registers"] > KD_SMALL_C_REGISTERS
    ]
    assert not heavy, heavy
    assert {r["arch"] for r in results} == {80, 90} and {r["dtype"] for r in results} == {
        "fp32",
        "bf16",
    }
    assert {r["kernel"] for r in results} == {"kd_loss", "masked_sgd", "masked_adamw", "nm_mask"}


@pytest.mark.timeout(300)
def test_a_representative_subset_compiles_for_sm80_and_sm90(tmp_path):
    results = compile_all(str(tmp_path))
    assert len(results) == 20
    check(results)


@pytest.mark.aot_all
@pytest.mark.timeout(1500)
def test_every_launch_variant_compiles_for_sm80_and_sm90(tmp_path):
    results = compile_all(str(tmp_path), "--all")
    assert len(results) == 136
    check(results)


def test_the_subset_is_drawn_from_the_variants_the_wrappers_launch():
    from datapruning.kernels import _aot

    every = {(v.kernel, v.name, v.dtype) for v in _aot.variants()}
    subset = {(v.kernel, v.name, v.dtype) for v in _aot.variants(subset=True)}
    assert subset < every and len(subset) == 10 and len(every) == 68
    # The KD variants' launch constants are the wrapper's own.
    from datapruning.kernels import kd_loss

    for v in _aot.variants():
        if v.kernel == "kd_loss":
            classes = int(v.name.split()[0].removeprefix("C="))
            block, rows, _, warps = kd_loss._config(classes)
            assert (v.constexprs["BLOCK"], v.constexprs["ROWS"], v.num_warps) == (
                block,
                rows,
                warps,
            )
