"""The clip store raw and JPEG-compressed (data.store_codec) against decoding on the fly: size on
disk and data-only clips/s per core, in one run (a script, not a test).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_store_codec.py [--videos 32]
        [--frames 75] [--seconds 3] [--qualities 90,75]

Encodes `--videos` H.264 clips of 320x240, 25 fps, a keyframe every 16 frames, of two contents:
`natural`, a panning texture with natural images' 1/f amplitude spectrum and a moving square,
and `blocks`, `distinit bench`'s panning texture of random 4x4-pixel blocks (no natural image
is that busy: JPEG's worst case). Per content it builds the raw store and a JPEG store per
quality at short side 128 with the code a run uses (`build_clip_store`), then times each source
(`frames.Decoder`, `StoredFrames`) in this process, one thread: 8-frame clips at stride 1 from
random starts, read as frames only (`frames(video, indices)`) and as training clips
(`VideoClipDataset` with `ClipTransform`: resize to 128 where needed, random crop 112, flip,
normalise). JPEG's error is the mean absolute difference from the raw store's frames.

The Kinetics-400 column is derived, not measured: 240,000 videos x 300 frames x the measured
bytes per stored frame (4:3 frames, 171x128; Kinetics' mostly 16:9 frames are 228x128, ~1.33x).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from distinit.data.clips.datasets import VideoClipDataset
from distinit.data.clips.sampling import ClipSpec
from distinit.data.clips.transforms import ClipTransform
from distinit.data.stores.clip_store import build_clip_store
from distinit.data.video.frames import Decoder, StoredFrames
from distinit.data.video.io import write_video
from distinit.tools.measure import cpu_model

H, W, FPS, GOP, RESIZE, CROP, CLIP_LEN = 240, 320, 25, 16, 128, 112, 8
K400_FRAMES = 240_000 * 300


def natural_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 noise with a 1/f amplitude spectrum (natural images' statistics), its
    colour mostly shared by the channels."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    amplitude = 1 / np.maximum(np.hypot(fy, fx), 1 / max(h, w))

    def field() -> np.ndarray:
        noise = np.fft.rfft2(rng.standard_normal((h, w))) * amplitude
        x = np.fft.irfft2(noise, s=(h, w))
        return (x - x.mean()) / x.std()

    luma, chroma = field(), [field() for _ in range(3)]
    img = np.stack([luma + 0.3 * c for c in chroma], -1)  # (h, w, 3)
    return np.clip(128 + 40 * img, 0, 255).astype(np.uint8)


def block_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """`distinit.tools.bench.make_videos`' texture: random 4x4-pixel blocks."""
    return rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)


def make_videos(folder: Path, count: int, num_frames: int, content: str) -> list[Path]:
    """`count` videos, each its own texture panning 2 px a frame, with a moving square."""
    folder.mkdir(parents=True)
    out = []
    for i in range(count):
        rng = np.random.default_rng(i)
        texture = (natural_texture if content == "natural" else block_texture)(rng, H, 2 * W)
        frames = np.stack([texture[:, 2 * t % W:2 * t % W + W] for t in range(num_frames)])
        s = H // 6
        for t in range(num_frames):
            y, x = (t + 3 * i) % (H - s), (3 * t + 5 * i) % (W - s)
            frames[t, y:y + s, x:x + s] = (255, 64, 0)
        out.append(folder / f"v{i:03d}.mp4")
        write_video(out[-1], frames, fps=FPS, gop=GOP)
    return out


def timed_rate(fn, seconds: float) -> tuple[float, float]:
    """(calls per wall second, calls per CPU second of this process), over about `seconds`."""
    fn(0)  # warm: first opens, first mappings
    n, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        fn(n)
        n += 1
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def measure(source, videos: list[Path], seconds: float) -> tuple[float, float]:
    """(frames-only clips per CPU second, training clips per CPU second)."""
    rng = np.random.default_rng(0)
    starts = [(v, int(rng.integers(0, source.num_frames(v) - CLIP_LEN + 1))) for v in videos]

    def frames_only(n: int) -> None:
        v, s = starts[n % len(starts)]
        source.frames(v, range(s, s + CLIP_LEN))

    ds = VideoClipDataset(videos, clips=ClipSpec(CLIP_LEN, 1, "train"), frames=source,
                          transform=ClipTransform(train=True, resize=RESIZE, crop=CROP), seed=0)
    return (timed_rate(frames_only, seconds)[1],
            timed_rate(lambda n: ds[n % len(ds)], seconds)[1])


def size(paths) -> int:
    return sum(p.stat().st_size for p in paths)


def human(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=32)
    p.add_argument("--frames", type=int, default=75, help="frames per video (3 s at 25 fps)")
    p.add_argument("--seconds", type=float, default=3.0, help="timing per source and mode")
    p.add_argument("--qualities", default="90,75")
    args = p.parse_args()
    torch.set_num_threads(1)
    qualities = [int(q) for q in args.qualities.split(",")]
    began = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for content in ("natural", "blocks"):
            videos = make_videos(root / content, args.videos, args.frames, content)
            n = args.videos * args.frames  # frames in all
            rows.append((content, "decode the videos (pyav)", size(videos) / n, "",
                         *measure(Decoder("pyav"), videos, args.seconds)))
            raw = build_clip_store(videos, root / f"{content}-raw", RESIZE, "pyav")
            raw_frames = StoredFrames(raw, videos)
            rows.append((content, "raw store", size(raw.glob("shard-*")) / n, "0",
                         *measure(raw_frames, videos, args.seconds)))
            for q in qualities:
                folder = build_clip_store(videos, root / f"{content}-q{q}", RESIZE, "pyav",
                                          codec="jpeg", quality=q)
                jpeg = StoredFrames(folder, videos, "jpeg", q)
                error = np.mean([np.abs(jpeg.frames(v, range(0, args.frames, 5)).astype(int)
                                        - raw_frames.frames(v, range(0, args.frames, 5))).mean()
                                 for v in videos])
                rows.append((content, f"jpeg store, quality {q}",
                             size(folder.glob("shard-*")) / n, f"{error:.2f}",
                             *measure(jpeg, videos, args.seconds)))
    print(f"{cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
          f"{args.videos} videos x {args.frames} frames of {W}x{H} H.264 per content; "
          f"stores at short side {RESIZE}; {time.perf_counter() - began:.0f} s in all\n")
    n = args.videos * args.frames
    print("| content | frames from | on disk | per frame | Kinetics-400 (derived) "
          "| JPEG error (levels) | frames-only clips/s per core | training clips/s per core |")
    print("|---|---|---|---|---|---|---|---|")
    for content, name, per, error, frames_rate, clips_rate in rows:
        k400 = human(per * K400_FRAMES) if "store" in name else ""
        print(f"| {content} | {name} | {human(per * n)} | {per / 1e3:.1f} kB | {k400} | {error} "
              f"| {frames_rate:.0f} | {clips_rate:.0f} |")


if __name__ == "__main__":
    main()
