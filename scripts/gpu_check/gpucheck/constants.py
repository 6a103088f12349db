"""Where things are, the names of a part's results, and the check's fixed numbers."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent  # scripts/gpu_check/gpucheck
ENTRY = HERE.parent.parent / "gpu_check.py"  # the script each part's process runs (--child)
ROOT = ENTRY.parent.parent  # the repository
SHIM = HERE.parent / "avshim"  # the OpenCV stand-in for PyAV
PASS, FAIL, ERROR, SKIPPED, TIMEOUT = "PASS", "FAIL", "ERROR", "SKIPPED", "TIMEOUT"
RUNNING = "RUNNING"  # a part's partial result, written as it goes
NEEDS_CUDA = "needs CUDA (no CUDA device here)"
RESERVE_S = 5  # kept back from the global deadline to write the report
LOSS_TOL, GRAD_TOL = 0.02, 0.05  # bf16 vs fp32: relative loss, relative global gradient norm
DEFAULT_PEAK_TFLOPS = 989.0  # H100/H200 dense bf16
