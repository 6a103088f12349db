"""`distinit prepare` on a few thousand small videos: videos/s, and per core, next to the
`check-videos` scan it reuses (its baseline), in one run.

    .venv/bin/python benchmarks/bench_prepare.py [--videos 2000] [--workers 1,2]
        [--reencode 200]

Writes `--videos` H.264 clips of 320x240, 75 frames (3 s at 25 fps, HMDB-51's typical size and
length; 40 distinct videos, copied) in UCF-101's unpacked layout with its split ZIP, then times
per worker count: `check-videos`' scan of the same files (`check.check_videos`); a first
`prepare` (link, probe, decode first and last frame, manifest); a second `prepare` over the
finished folder (its record only); and `prepare --short-side 128` on the first `--reencode`
videos (decode every frame, re-encode H.264 with a keyframe every 16). Each worker is a process
with one thread.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from distinit.data.labels.prepare import prepare
from distinit.data.video.check import check_videos
from distinit.tools.bench import make_videos
from distinit.tools.measure import cpu_model

DISTINCT, CLASSES = 40, 20


def ucf_like(root: Path, count: int, base: list[Path]) -> Path:
    """UCF-101/<Class>/<video> and UCF101TrainTestSplits-RecognitionTask.zip for `count` copies."""
    src = root / "download"
    names = [f"Class{i % CLASSES:02d}/v_{i:05d}.mp4" for i in range(count)]
    for i, name in enumerate(names):
        (src / "UCF-101" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base[i % len(base)], src / "UCF-101" / name)
    lists = {"classInd.txt": "".join(f"{i + 1} Class{i:02d}\r\n" for i in range(CLASSES))}
    for s in (1, 2, 3):
        train = [f"{n} {int(n[5:7]) + 1}\r\n" for i, n in enumerate(names) if i % 3 != s - 1]
        lists[f"trainlist0{s}.txt"] = "".join(train)
        lists[f"testlist0{s}.txt"] = "".join(f"{n}\r\n" for i, n in enumerate(names)
                                             if i % 3 == s - 1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for k, v in lists.items():
            archive.writestr(f"ucfTrainTestlist/{k}", v)
    (src / "UCF101TrainTestSplits-RecognitionTask.zip").write_bytes(buf.getvalue())
    return src


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=2000)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--reencode", type=int, default=200)
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = sorted((make_videos(root / "base", DISTINCT, (240, 320), 75)).glob("*.mp4"))
        src = ucf_like(root, args.videos, base)
        small = ucf_like(root / "small", args.reencode, base)
        paths = sorted((src / "UCF-101").rglob("*.mp4"))
        rows = []
        for w in (int(x) for x in args.workers.split(",")):
            out = root / f"out{w}"
            rows.append((w, "check-videos scan (baseline)", len(paths),
                         timed(lambda w=w: check_videos(paths, workers=w))))
            rows.append((w, "prepare, first run", len(paths),
                         timed(lambda w=w, out=out: prepare("ucf101", src, out, workers=w))))
            rows.append((w, "prepare, second run (record)", len(paths),
                         timed(lambda w=w, out=out: prepare("ucf101", src, out, workers=w))))
            rows.append((w, "prepare --short-side 128", args.reencode,
                         timed(lambda w=w: prepare("ucf101", small, root / f"re{w}", workers=w,
                                                   short_side=128))))
    cpu = cpu_model()
    print(f"{cpu}, {os.cpu_count()} cores; {args.videos} videos of 320x240, 75 frames, H.264\n")
    print("| workers | step | videos | s | videos/s | videos/s per core |")
    print("|---|---|---|---|---|---|")
    for w, step, n, s in rows:
        print(f"| {w} | {step} | {n} | {s:.1f} | {n / s:.1f} | {n / s / w:.1f} |")


if __name__ == "__main__":
    main()
