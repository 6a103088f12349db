"""What the 3-crop test costs against the centre-only one, in one run: `data.test_crops` 1 and 3
over the same test videos and clips (`data.num_test_clips`), through the dataset and the
per-video evaluation loop a run uses (`build.clip_dataset`, `jobs.evaluate.per_video`).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_test_crops.py [--videos 24] [--clips 10]
        [--arch r2plus1d_18] [--width 64] [--workers 0] [--threads 2]

Prints, per protocol: clips scored, wall seconds, clips/s, seconds per video, peak resident
memory, and the ratio to centre-only. The videos (320x240, 64 frames, H.264 keyframe every 16)
are written by the benchmark; the student is untrained (its speed does not depend on weights).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from distinit.build import clip_dataset, make_student
from distinit.config import load_config
from distinit.data.video.io import list_videos
from distinit.engine.runtime import Runtime
from distinit.jobs.evaluate import per_video
from distinit.tools.bench import make_videos
from distinit.tools.measure import PeakMemory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--clips", type=int, default=10)
    p.add_argument("--arch", default="r2plus1d_18")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_videos(Path(tmp) / "videos", args.videos, (240, 320))
        videos = list_videos(folder)
        cfg = load_config(None, [f"model.arch={args.arch}", f"model.width={args.width}",
                                 f"data.num_test_clips={args.clips}", "data.resize=128",
                                 "data.crop=112", "data.mean=[0.45,0.45,0.45]",
                                 "data.std=[0.225,0.225,0.225]", "device=cpu"])
        torch.manual_seed(0)
        student = make_student(cfg.model, num_classes=51).eval()
        rt = Runtime.of(cfg)
        rt.place(student)
        rows = []
        for crops in (1, 3):
            dc = replace(cfg.data, test_crops=crops)
            dataset = clip_dataset(dc, videos, [0] * len(videos), False, 0)
            with torch.no_grad(), PeakMemory(torch.device("cpu")) as mem:
                t0 = time.perf_counter()
                _, counts, _ = per_video(lambda b: student(b["video"]), dataset, len(videos),
                                         runtime=rt, batch_size=args.batch,
                                         num_workers=args.workers)
                seconds = time.perf_counter() - t0
            rows.append((crops, int(counts.sum()), seconds, mem.peak))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, {args.workers} loader workers; {args.arch} width "
          f"{args.width}, {args.videos} videos x {args.clips} clips of 8x112x112, "
          f"autocast {rt.amp_dtype or 'fp32'}\n")
    print("| protocol | clips | s | clips/s | s per video | peak RSS | time vs centre-only |")
    print("|---|---|---|---|---|---|---|")
    base = rows[0][2]
    for crops, clips, seconds, peak in rows:
        name = "centre crop" if crops == 1 else "3 crops"
        print(f"| {name} x {args.clips} clips | {clips} | {seconds:.1f} | {clips / seconds:.1f} | "
              f"{seconds / args.videos:.2f} | {peak / 2**30:.2f} GiB | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
