#!/usr/bin/env bash
# The GPU check in one call: environment, correctness (bf16 vs fp32 step, NCCL + DDP, distill /
# finetune / --resume through the CLI on the GPU) and speed (`distinit bench`), written to one
# Markdown report. Needs no install: the project runs from src/ (PYTHONPATH=src).
#
#   bash scripts/gpu_check.sh [--out REPORT.md] [--budget-s 450] [--wheels DIR] [--world DIR]
#                             [--video-io auto|pyav|opencv] [--dry-run] [--help]
#
# --dry-run runs every part with tiny sizes on the CPU (CUDA-only parts are reported skipped);
# see scripts/gpu_check.py and docs/BENCHMARKS.md ("GPU check") for the rest.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then
        PY="$HERE/../.venv/bin/python"
    elif command -v python3 >/dev/null; then
        PY=python3
    else
        PY=python
    fi
fi
exec "$PY" "$HERE/gpu_check.py" "$@"
