#!/usr/bin/env python3
"""The GPU check in one call: does distinit run right, and how fast, on a CUDA machine?

    bash scripts/gpu_check.sh [--out REPORT.md] [--budget-s 450] [--wheels DIR] [--world DIR]
                              [--video-io auto|pyav|opencv] [--dry-run] [--skip PART,...]

One Markdown report (`--out`; default $OUT/gpu_check.md when $OUT is set, else gpu_check.md):

1. Environment: Python, torch, CUDA, cuDNN, NCCL, the GPU, `nvidia-smi`, which optional
   packages import, how videos are read and written.
2. Correctness: one training step of R(2+1)D-18 (the project's student) under bf16 autocast in
   channels_last_3d against the same step in fp32 (same init, same batch; loss within 2%,
   global gradient norm within 5%); a one-process NCCL group with the student in DDP (its
   gradients equal the plain student's); `distinit distill` and `distinit finetune` through the
   CLI on the GPU, each stopped after 2 steps (stop_after=2) and finished with --resume.
3. Speed: `distinit bench --preset full` at batch 64, 16 (and 32), compile off and on (64),
   live and cached targets (bench measures both in one run), 16 loader workers (decode and the
   clip store); MFU, peak memory, the share of step time spent waiting on data, GPU utilisation
   sampled with nvidia-smi; single-process decoding, torchcodec's GPU decoder when it imports.

Every part runs in a process of its own with its own time limit; a part that fails, raises or
runs out of time is reported (with the error's last line) and the next one runs. `--budget-s`
is a global deadline: parts that would start past it are reported skipped. The report is
written again after every part, so a call cut short still leaves what was done.

No install: the project runs from src/ (PYTHONPATH=src). distinit reads and writes videos with
PyAV only; where PyAV is missing, `--wheels DIR` installs the wheels in DIR (a PyAV wheel for
this Python, e.g. av-*-cp312-*manylinux*.whl) into a temporary folder on PYTHONPATH, and without
one a stand-in for PyAV built on OpenCV (scripts/gpu_check/avshim) is put on PYTHONPATH, so the
project's own video code runs on cv2 (mp4v videos written, OpenCV decoding timed).

`--dry-run` runs every part on the CPU with tiny sizes (the CUDA-only ones are reported skipped,
"needs CUDA"), writes the report and exits 0 when every part that ran passed: CI runs it
(tests/test_gpu_check.py).

The code is the package scripts/gpu_check/gpucheck/ (its __init__.py lists the modules); this
file is its entry point, and the script each part's process runs (--child).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu_check"))

from gpucheck.arguments import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(description=__doc__.splitlines()[0]))
