"""The command line: the parent's options, and the hidden ones a part's process is started with."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .child import child_main
from .constants import DEFAULT_PEAK_TFLOPS
from .parent import parent_main
from .plan import PARTS


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """`description`: the help's first line (scripts/gpu_check.py passes its docstring's)."""
    parser = argparse.ArgumentParser(description=description)
    default_out = str(Path(os.environ["OUT"]) / "gpu_check.md") if os.environ.get("OUT") \
        else "gpu_check.md"
    parser.add_argument("--out", default=default_out, help=f"the report (default {default_out})")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="global deadline in seconds; parts past it are skipped")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on the CPU; CUDA-only parts reported skipped")
    parser.add_argument("--wheels", default="", help="folder of wheels (e.g. PyAV for this "
                        "Python) to unpack into a temporary folder on PYTHONPATH")
    parser.add_argument("--world", default="", help="a synthetic world made by `distinit synth "
                        "DIR --size tiny` (default: generated here)")
    parser.add_argument("--video-io", default="auto", choices=("auto", "pyav", "opencv"),
                        help="auto: PyAV if it imports, else the OpenCV stand-in")
    parser.add_argument("--device", default="", help="default cuda (cpu with --dry-run)")
    parser.add_argument("--bench-workers", type=int, default=0,
                        help="loader workers of the bench runs (default min(16, cores))")
    parser.add_argument("--bench-videos", type=int, default=128,
                        help="videos the bench writes (320x240, 64 frames)")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help=f"peak for MFU when bench knows none (default {DEFAULT_PEAK_TFLOPS:g})")
    parser.add_argument("--skip", default="", help="comma-separated parts not to run: "
                        + ",".join(p.key for p in PARTS))
    parser.add_argument("--work", default="", help="working folder (default: a temporary one, "
                        "deleted at the end)")
    parser.add_argument("--no-logs", action="store_true",
                        help="do not copy the parts' logs next to the report")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ctx", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, Path(args.ctx), Path(args.result))
    return parent_main(args)
