#!/usr/bin/env bash
# bench/stage.sh DIR — run on the developer machine (network, .venv): downloads the wheels
# that bench/run.py installs on the device machine (no network there) for its PyTorch
# YOLOv8n: ultralytics 8.4.190 and ultralytics-thop, without their dependencies (the
# device's PyTorch stack has what inference needs; run.py stubs the rest).
#
#   scripts/gpu-check            # first: it empties .gpu-bundle/
#   bench/stage.sh .gpu-bundle/wheels
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: bench/stage.sh DIR" >&2
  exit 2
fi
dir=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
py=python3
[ -x "$repo/.venv/bin/python" ] && py="$repo/.venv/bin/python"
mkdir -p "$dir"
"$py" -m pip download --no-deps --only-binary=:all: -d "$dir" \
  "ultralytics==${ULTRALYTICS_VERSION:-8.4.190}" "ultralytics-thop${THOP_VERSION:+==$THOP_VERSION}"
ls -l "$dir"/*.whl
