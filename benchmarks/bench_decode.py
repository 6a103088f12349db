"""Decode throughput of each video backend on training-style clips (a script, not a test).

Encodes its own 320x240 30 fps test videos into a temp dir, then for every backend that
imports measures clips/s in one process, one thread: 8-frame clips at stride 2 from random
starts, the file reopened per clip, resized to short side 128 and center-cropped to 112.
The row "pyav, no seek" decodes from the first frame up to the clip instead of seeking.

    python benchmarks/bench_decode.py [--seconds 3] [--backends pyav,torchcodec,decord]
                                      [--resizer torch|cv2]

Each cell: clips per wall-clock second, and in brackets clips per CPU-second of the process
(steadier when other jobs share the machine; lower than wall if a library uses more threads).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from distinit.data.video.io import BACKENDS, read_frames, write_video
from distinit.errors import UserError

CLIP_LEN, STRIDE, SHORT_SIDE, CROP = 8, 2, 128, 112
VIDEOS = {  # column name -> (file name, codec, gop)
    "h264 gop250": ("h264_gop250.mp4", "libx264", 250),
    "h264 gop16": ("h264_gop16.mp4", "libx264", 16),
    "mjpeg": ("mjpeg.avi", "mjpeg", None),
}


def make_frames(num_frames: int, height: int = 240, width: int = 320) -> np.ndarray:
    """A panning textured background with a moving square: compresses like real footage."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 8, 2 * width // 8, 3), dtype=np.uint8)
    texture = texture.repeat(8, axis=0).repeat(8, axis=1)  # blocky, so the codec has work
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t] = texture[:, 2 * t % width:2 * t % width + width]
        y, x = 40 + t % 120, (3 * t) % (width - 40)
        frames[t, y:y + 40, x:x + 40] = (255, 64, 0)
    return frames


def resize_crop(clip: np.ndarray, resizer: str) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, CROP, CROP) float: short side to SHORT_SIDE, center crop.

    Both resizers antialias. torch resizes the uint8 frames in their channels-last layout,
    measured ~7x faster on one core than the same resize in float (1.6 vs 11-15 ms a clip).
    """
    T, H, W, _ = clip.shape
    scale = SHORT_SIDE / min(H, W)
    h, w = round(H * scale), round(W * scale)
    if resizer == "cv2":
        import cv2

        clip = np.stack([cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA) for frame in clip])
        x = torch.from_numpy(clip).permute(3, 0, 1, 2)  # (3, T, h, w)
    else:
        x = torch.from_numpy(clip).permute(0, 3, 1, 2)  # (T, 3, H, W), uint8 channels-last
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        x = x.permute(1, 0, 2, 3)  # (3, T, h, w)
    top, left = (h - CROP) // 2, (w - CROP) // 2
    return x[:, :, top:top + CROP, left:left + CROP].float()


def read_from_start(path: Path, indices: list[int]) -> np.ndarray:
    """The baseline: decode every frame from the first one, no seek."""
    wanted, out = set(indices), {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # as in read_frames
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= max(indices):
                break
    return np.stack([out[i] for i in indices])


def clips_per_second(read: Callable[[list[int]], np.ndarray], num_frames: int, resizer: str,
                     seconds: float, rng: np.random.Generator) -> tuple[float, float]:
    """(clips per wall second, clips per CPU second of this process) over `seconds`."""
    read([0])  # warm up imports and caches
    count, wall, cpu = 0, time.perf_counter(), time.process_time()
    while count < 3 or time.perf_counter() - wall < seconds:
        start = int(rng.integers(0, num_frames - (CLIP_LEN - 1) * STRIDE))
        clip = read(list(range(start, start + CLIP_LEN * STRIDE, STRIDE)))  # (T, H, W, 3)
        assert resize_crop(clip, resizer).shape == (3, CLIP_LEN, CROP, CROP)
        count += 1
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per table cell")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--duration", type=float, default=10.0, help="video length in seconds")
    parser.add_argument("--resizer", choices=["torch", "cv2"], default="torch",
                        help="torch: F.interpolate bilinear antialiased; cv2: INTER_AREA")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # clips/s per core
    if args.resizer == "cv2":
        import cv2

        cv2.setNumThreads(1)
    num_frames = int(args.duration * 30)
    with tempfile.TemporaryDirectory() as tmp:
        frames = make_frames(num_frames)
        paths = {}
        for column, (name, codec, gop) in VIDEOS.items():
            paths[column] = Path(tmp) / name
            write_video(paths[column], frames, fps=30, codec=codec, gop=gop)
        print(f"{num_frames} frames 320x240 30 fps; clips of {CLIP_LEN} frames at stride {STRIDE}, "
              f"random start, file reopened per clip; resize to short side {SHORT_SIDE} with "
              f"{args.resizer}, center crop {CROP}; 1 thread; {args.seconds:g} s per cell")
        rows: dict[str, Callable[[Path], Callable[[list[int]], np.ndarray]]] = {
            "pyav, no seek (baseline)": lambda p: lambda idx: read_from_start(p, idx)}
        for backend in args.backends.split(","):
            rows[backend] = lambda p, b=backend: lambda idx: read_frames(p, idx, backend=b)
        print(f"\n{'clips/s (per CPU-second)':<26}" + "".join(f"{c:>18}" for c in VIDEOS))
        rng = np.random.default_rng(0)
        for row, reader_for in rows.items():
            cells, note = [], ""
            for column in VIDEOS:
                try:
                    wall, cpu = clips_per_second(reader_for(paths[column]), num_frames,
                                                 args.resizer, args.seconds, rng)
                    cells.append(f"{wall:10.1f} ({cpu:5.1f})")
                except UserError as e:  # a backend that is not installed
                    cells.append(f"{'n/a':>18}")
                    note = f"  ({str(e)[:70]})"
            print(f"{row:<26}" + "".join(cells) + note)
    print("\ntarget: >= 25 clips/s per core on h264 gop16 with random starts")
    # Peak resident memory of this process over all cells (backends are loaded side by side).
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS of the process): {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
