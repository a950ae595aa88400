#!/usr/bin/env bash
# One-shot GPU check: bench on CUDA (DCGAN-64 fp32 / bf16 / compile at batch 64, 256, 1024),
# data-parallel runs, and the default job on the GPU with its judge numbers; one JSON and one
# Markdown summary. Without a GPU it runs the quick CPU fallback and says so (CI runs it).
#   bash scripts/gpu_check.sh [OUT_DIR]     (default: $OUT, else ./gpu_check)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
