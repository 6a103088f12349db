"""Optical flow throughput per core of each algorithm, beside decoding (a script, not a test).

Encodes its own 30 fps H.264 videos at 320x240 and 150x112 into a temp dir (a blocky
texture panning left 2 px a frame under a textured square moving (3, 1) px a frame, as in
bench_decode.py), then in one process with one OpenCV thread measures:
  decode: `read_all_frames` (PyAV) frames/s;
  flow:   `video_flow` frames/s: gray conversion, flow and uint8 quantisation, as `distinit
          flow` does in each worker; decode+flow is what one worker process gets per core;
  EPE:    mean end-point error in px against the known motion (background (-2, 0), square
          (3, 1)), away from the borders and the square's edges, after uint8 quantisation.
The row "dis, FAST preset" is not an option of `distinit flow`; it shows why `dis` uses MEDIUM.

    python benchmarks/bench_flow.py [--seconds 2] [--frames 90]

Each cell: frames per wall-clock second, in brackets per CPU-second of the process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from distinit.data.flow.compute import ALGORITHMS, flow_estimator, import_cv2, video_flow
from distinit.data.flow.store import dequantize, flow_meta
from distinit.data.video.io import read_all_frames, write_video
from distinit.errors import UserError

SIZES = [(240, 320), (112, 150)]  # (H, W); 150 not 149: H.264 4:2:0 needs even sizes
PAN = 2  # px a frame the background moves left: its true flow is (-PAN, 0)
SQUARE, VELOCITY = 40, (3, 1)  # the square moves (x, y) px a frame, wrapping at the edges
FAST_ROW = "dis, FAST preset"


def make_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3): a textured square moving over a panning texture (compresses like footage)."""
    rng = np.random.default_rng(0)
    reach = width + PAN * num_frames
    texture = rng.integers(0, 256, (height // 8 + 1, reach // 8 + 1, 3), dtype=np.uint8)
    texture = texture.repeat(8, axis=0).repeat(8, axis=1)  # blocky, so the codec has work
    square = rng.integers(0, 256, (SQUARE // 4, SQUARE // 4, 3), dtype=np.uint8)
    square = square.repeat(4, axis=0).repeat(4, axis=1)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t] = texture[:height, PAN * t:PAN * t + width]
        y, x = square_corner(t, height, width)
        frames[t, y:y + SQUARE, x:x + SQUARE] = square
    return frames


def square_corner(t: int, height: int, width: int) -> tuple[int, int]:
    return VELOCITY[1] * t % (height - SQUARE), VELOCITY[0] * t % (width - SQUARE)


def scene_epe(flow: np.ndarray, height: int, width: int) -> float:
    """Mean end-point error of (T, H, W, 2) float pixels against the true motion, away from
    the borders and from the square's edges (where one pixel can hold both motions)."""
    errors = []
    for t in range(len(flow) - 1):
        truth = np.zeros((height, width, 2), np.float32)
        truth[..., 0] = -PAN
        mask = np.zeros((height, width), bool)
        mask[8:-8, 8:-8 - 4 * PAN] = True  # new texture enters on the right: its flow is a guess
        (y0, x0), (y1, x1) = square_corner(t, height, width), square_corner(t + 1, height, width)
        for y, x in ((y0, x0), (y1, x1)):
            mask[max(0, y - 6):y + SQUARE + 6, max(0, x - 6):x + SQUARE + 6] = False
        if (x1 - x0, y1 - y0) == VELOCITY:  # not the frame where it wraps around
            truth[y0:y0 + SQUARE, x0:x0 + SQUARE] = VELOCITY
            mask[y0 + 6:y0 + SQUARE - 6, x0 + 6:x0 + SQUARE - 6] = True
        errors.append(np.hypot(*(flow[t] - truth).transpose(2, 0, 1))[mask])
    return float(np.concatenate(errors).mean())


def dis_fast(cv2: ModuleType) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """DIS with the FAST preset, for comparison with `distinit flow`'s MEDIUM."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_FAST)
    return lambda prev, nxt: dis.calc(prev, nxt, None)


def per_second(work: Callable[[], int], seconds: float) -> tuple[float, float]:
    """(frames per wall second, frames per CPU second) of `work`, which returns its frames."""
    work()  # warm up
    count, wall, cpu = 0, time.perf_counter(), time.process_time()
    while count == 0 or time.perf_counter() - wall < seconds:
        count += work()
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--frames", type=int, default=90, help="frames per video")
    args = parser.parse_args(argv)
    cv2 = import_cv2()
    cv2.setNumThreads(1)  # frames/s per core: `distinit flow` runs one thread per worker
    meta = {name: flow_meta(name, "uint8", 20.0, 0) for name in ALGORITHMS}
    print(f"OpenCV {cv2.__version__}; {args.frames}-frame H.264 videos, 1 thread, "
          f"{args.seconds:g} s per cell; uint8 storage, bound 20")
    with tempfile.TemporaryDirectory() as tmp:
        for height, width in SIZES:
            path = Path(tmp) / f"{width}x{height}.mp4"
            write_video(path, make_frames(args.frames, height, width), fps=30, codec="libx264")
            frames = read_all_frames(path)  # (T, H, W, 3)
            decode, decode_cpu = per_second(lambda p=path: len(read_all_frames(p)), args.seconds)
            print(f"\n{width}x{height}: decode {decode:.0f} frames/s ({decode_cpu:.0f})")
            print(f"  {'algorithm':<22}{'flow frames/s':>20}{'decode+flow':>14}{'EPE px':>9}")
            for row in [*ALGORITHMS, FAST_ROW]:
                try:
                    estimator = dis_fast(cv2) if row == FAST_ROW else flow_estimator(row)
                except UserError as e:  # tvl1 without opencv-contrib
                    print(f"  {row:<22}{'n/a':>20}  ({e})")
                    continue
                settings = meta["dis" if row == FAST_ROW else row]
                flow, flow_cpu = per_second(
                    lambda f=frames, m=settings, e=estimator: len(video_flow(f, m, e)),
                    args.seconds)
                stored = video_flow(frames, settings, estimator)  # (T, H, W, 2) uint8
                epe = scene_epe(dequantize(stored, settings), height, width)
                both = 1 / (1 / decode + 1 / flow)
                print(f"  {row:<22}{flow:>11.0f} ({flow_cpu:5.0f}){both:>14.0f}{epe:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
