#!/usr/bin/env bash
# Downloads, here, the cp312 manylinux x86_64 wheels bench/gpu_check.sh carries to the GPU
# machine (what its image lacks: /work/.library/device/KINDS.md), into .whl/ at the
# repository's root, ignored by git. Versions are this checkout's (.venv); pydantic 2.14
# needs typing_extensions >= 4.16. Then: the device run with carry [".whl"] and the command
# `bash bench/gpu_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF "/.whl/" "$exclude" 2>/dev/null ||
  echo "/.whl/" >>"$exclude"
mkdir -p .whl
wheels=(
  pydantic==2.14.4
  pydantic_core==2.50.5
  annotated_types==0.8.0
  typing_inspection==0.4.5
  typing_extensions==4.16.0
  mnist1d==0.0.2.post1
)
"$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl "${wheels[@]}"
# One version of each: two would stop the whole install there.
ls .whl
du -sh .whl
