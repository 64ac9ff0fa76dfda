#!/usr/bin/env bash
# The prepared GPU check (scripts/gpu_check.py): on a machine with one GPU and PyTorch (with
# torchvision, numpy, Pillow, tqdm; pytest for the tests), from a checkout of this repository,
# no install: the library-only `gpu` tests, the bf16 / channels-last throughput benchmark and
# the paper's searches and trainings forecast, as one JSON on stdout. Under 8 minutes.
#   bash scripts/gpu_check.sh > gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
