#!/usr/bin/env bash
# The GPU check, run first whenever a GPU is lent (the device tool): the kernels' CUDA
# tests, the loop's CUDA tests, the kernel benchmarks (--quick), then the ahead-of-time
# compile test, each under its own timeout, every log under $OUT. Target: at most 4
# minutes of work, so a 15-minute lease leaves room for the machine's start and a rerun:
# the four groups' limits sum to 240 s (80 + 50 + 80 + 30), the installs take seconds.
# Dry runs on the shared 2-core CPU machine (CUDA tests skipped there, benchmarks on CPU,
# load 4-5.5): 84 s and 110 s in all (install 1-2, kernel tests 6-8, loop tests 16-18,
# bench 44-60, aot 9-19).
#
#   here:  bash bench/gpu_wheels.sh          (downloads the wheels below into .whl/)
#   there: bash bench/gpu_check.sh            (device run with carry [".whl"]; logs in $OUT)
#
# What the GPU machine has (its image, /work/.library/device/KINDS.md; printed below with
# `pip show`): Python 3.12, torch + CUDA, triton 3.6 (ptxas and cuobjdump inside), numpy,
# pytest, pytest-timeout, and what the collected tests import: hypothesis (tests/conftest.py),
# typer, pandas, pyarrow, scikit-learn, scipy, matplotlib, requests, pyyaml, tqdm, rich,
# threadpoolctl, pillow. What it lacks travels as cp312 wheels in .whl/ (ignored by git
# through .git/info/exclude; bench/gpu_wheels.sh fetches them): pydantic 2.14 with
# pydantic_core, annotated_types, typing_inspection and typing_extensions >= 4.16 (pydantic
# 2.14 needs it; the image's may be older), for the loop's config, and mnist1d, the default
# dataset. The kernels themselves need only torch and triton.
#
# Dry run on a CPU machine (timing budget; the CUDA tests skip, the benchmarks run on CPU):
#   OUT=$(mktemp -d) GPU_CHECK_DEVICE=cpu PYTHON=.venv/bin/python bash bench/gpu_check.sh
# Copy $OUT/kernels_gpu.json into bench/results/ (its "machine" names the GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
py=${PYTHON:-python3}
device=${GPU_CHECK_DEVICE:-cuda}
site=${SITE:-$(mktemp -d /tmp/gpu_check_site.XXXXXX)}
mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"
status=0
began=$(date +%s)

# step NAME SECONDS CMD...: run CMD under its own timeout, its log in $OUT/NAME.log.
step() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  tail -n 3 "$out/$name.log"
  echo "$name: exit $rc in $(($(date +%s) - start)) s (limit $limit s)" | tee -a "$summary"
  [ "$rc" -eq 0 ] || status=1
}

pyver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ "$pyver" != 3.12 ]; then
  echo "wheels: skipped (python $pyver here; the wheels are cp312)" | tee -a "$summary"
elif compgen -G ".whl/*.whl" >/dev/null; then
  step wheels 30 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" .whl/*.whl
fi
# The project itself, beside them (offline, with the machine's setuptools): models/ and
# flows/ become datapruning.models and datapruning.flows only through the install's
# package mapping, so the bare tree on PYTHONPATH would not do.
step install 60 "$py" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
  --no-cache-dir --target "$site" .
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
  "$py" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  "$py" -m pip show torch triton numpy pytest pytest-timeout hypothesis typer pandas pyarrow \
    scikit-learn scipy matplotlib requests pyyaml tqdm rich threadpoolctl pillow pydantic \
    pydantic_core annotated_types typing_inspection typing_extensions mnist1d 2>&1 |
    grep -E "^(Name|Version|Location|WARNING)"
} >"$out/env.log" 2>&1
cat "$out/env.log"

# -P: the tree's own datapruning/ (without models/ and flows/) must not shadow the install.
pytest=("$py" -P -m pytest -q -p no:cacheprovider -o addopts="-ra --strict-markers")
# 1. The kernels on the GPU against their references (the probe, masked SGD/AdamW, N:M,
#    the select, KD, 2:4).
step kernel_tests 80 "${pytest[@]}" -m cuda --timeout 60 tests/kernels
# 2. The loop and the benchmarks on CUDA (Triton through train(), autocast, 2:4 layers).
step loop_tests 50 "${pytest[@]}" -m cuda --timeout 45 tests/train tests/bench
# 3. The kernel benchmarks, quick: kernels.py rewrites its JSON after each part, so a
#    part cut off by the timeout keeps the others' figures.
# (On a CPU dry run the KD part measures the fused kernel's saved bytes in the interpreter.)
interpret=0
[ "$device" = cpu ] && interpret=1
step bench 80 env TRITON_INTERPRET=$interpret "$py" bench/kernels.py --device "$device" --quick \
  --out "$out/kernels_gpu.json"
# 4. Last, the ahead-of-time compile subset (sm_80/sm_90, fp32/bf16) with this Triton.
step aot 30 "${pytest[@]}" --timeout 28 tests/kernels/test_aot.py -rA

echo "gpu_check: $(($(date +%s) - began)) s in all, exit $status" | tee -a "$summary"
exit $status
