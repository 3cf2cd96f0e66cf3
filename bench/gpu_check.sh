#!/usr/bin/env bash
# The GPU check, run once on a lent GPU machine (the device tool), under 5 minutes:
# the cuda-marked tests, then every kernel benchmark on CUDA.
#
#   here:  python3 -m pip download ... -d .whl pydantic==... (see docs below), then
#   there: bash bench/gpu_check.sh            (with .whl carried; results land in $OUT)
#
# That machine has its own Python (3.12, torch + CUDA, Triton, pytest, numpy) and no
# network. What the checks need beyond it travels as wheels in .whl/ (ignored by git
# through .git/info/exclude; carry it): pydantic, pydantic_core, annotated_types,
# typing_inspection (the loop's config) and mnist1d (its default dataset), for Python
# 3.12 on manylinux x86_64. The kernels themselves need only torch and triton.
# Copy the JSON it writes into bench/results/ (its name carries the GPU's).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
# The project itself, installed beside them (offline, with the machine's setuptools):
# models/ and flows/ become datapruning.models and datapruning.flows only through the
# install's package mapping, so the bare tree on PYTHONPATH would not do.
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
  --no-cache-dir --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

status=0
# Budget (issue 11: the whole script under 5 minutes): the benchmarks first, since
# their figures are what only this machine can give; kernels.py rewrites its JSON
# after each part (kd, optim, semi, step), so a part cut off by the timeout keeps
# the others'. Most of the step part is torch.compile of ResNet-18 and the ViT
# (compile_seconds in the JSON).
timeout 180 python3 bench/kernels.py --device cuda --out "$out/kernels_gpu.json" \
  2>&1 | tee "$out/gpu_bench.log" || status=1
# CUDA tests: the kernel tests, the loop's CUDA tests and the benchmarks' CUDA tests.
# Every module collected here imports only torch, triton, numpy, pydantic, yaml and
# tqdm at import time (checked by collecting them with prefect, faiss, mnist1d and
# ffcv made unimportable; tests/bench/test_loaders_bench.py skips itself without
# ffcv); the tests that train on MNIST-1D need the mnist1d wheel above.
# -P: the tree's own datapruning/ (which lacks models/ and flows/) must not shadow /tmp/site's.
timeout 100 python3 -P -m pytest -q -p no:cacheprovider -m cuda -o addopts="" \
  tests/kernels tests/train tests/bench 2>&1 | tee "$out/gpu_tests.log" || status=1
exit $status
