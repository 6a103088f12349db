"""3d. Single-process decoding: the backend in use, and torchcodec on the CPU and on the GPU when
it imports, its frames compared with the first backend's."""

from __future__ import annotations

import time
from pathlib import Path

from .constants import FAIL, NEEDS_CUDA, PASS
from .text import last_line, md_cell


def part_decode(ctx: dict) -> dict:
    """Single-process decoding of 8-frame clips: the backend in use, torchcodec on the CPU and
    on the GPU when it imports; torchcodec's frames compared with the first backend's."""
    import numpy as np
    import torch

    from distinit.data.video.io import probe, read_frames, write_video

    if ctx["video_io"] == "none":
        return {"status": FAIL, "summary": f"no way to read videos: {ctx['video_note']}",
                "lines": []}
    videos = sorted((Path(ctx["work"]) / "bench" / "videos").glob("*.mp4"))[:16]
    if not videos:  # bench did not run: a few of our own
        folder = Path(ctx["work"]) / "decode_videos"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(4):
            frames = rng.integers(0, 256, (32, 120, 160, 3), dtype=np.uint8)
            write_video(folder / f"v{i}.mp4", frames, fps=25, gop=16)
        videos = sorted(folder.glob("*.mp4"))
    clips_n = 8 if ctx["dry_run"] else 64
    rng = np.random.default_rng(0)
    info = probe(videos[0])
    picks = [(videos[i % len(videos)], int(rng.integers(0, max(info.num_frames - 8, 1))))
             for i in range(clips_n)]
    cuda = ctx["device"].startswith("cuda") and torch.cuda.is_available()
    lines = [f"- {clips_n} clips of 8 frames at random starts from {len(videos)} videos of "
             f"{info.width}x{info.height}, {info.num_frames} frames; one process",
             "", "| backend | device | clips/s | mean abs. difference to the first |",
             "|---|---|---|---|"]
    try:
        import torchcodec  # noqa: F401

        torchcodec_ok = ""
    except Exception as e:  # ImportError, or RuntimeError without FFmpeg's libraries
        torchcodec_ok = f"{type(e).__name__}: {last_line(str(e))}"
    configs = [("pyav", "cpu")]
    skips = [] if cuda else [f"- torchcodec GPU decoder: skipped, {NEEDS_CUDA}"]
    if torchcodec_ok:
        skips.append(f"- torchcodec: skipped, it does not import ({torchcodec_ok})")
    else:
        configs += [("torchcodec", "cpu")] + ([("torchcodec", "cuda")] if cuda else [])
    reference, status, failures = None, PASS, []
    for backend, device in configs:
        label = backend if backend != "pyav" or ctx["video_io"] == "pyav" else \
            "pyav (OpenCV stand-in)"
        try:
            read_frames(picks[0][0], range(8), backend, device=device)  # warm-up
            t = time.perf_counter()
            out = [read_frames(v, range(s, s + 8), backend, device=device) for v, s in picks]
            rate = clips_n / (time.perf_counter() - t)
        except Exception as e:
            failures.append(f"{label} on {device}: {type(e).__name__}: {last_line(str(e))}")
            lines.append(f"| {label} | {device} | failed: {md_cell(failures[-1])} | |")
            if backend == "pyav":
                status = FAIL
            continue
        if reference is None:
            reference, diff = out, "-"
        else:
            d = np.mean([np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()
                         for a, b in zip(reference, out)])
            diff = f"{d:.2f}"
            if d > 8:
                failures.append(f"{label} on {device} differs from pyav by {d:.1f} levels")
                status = FAIL
        lines.append(f"| {label} | {device} | {rate:.1f} | {diff} |")
    lines += ["", *skips]
    if failures and status == PASS:  # torchcodec failing to decode is reported, not failed
        lines.append(f"- not counted against the check: {'; '.join(failures)}")
    summary = ", ".join(x.split("|")[1].strip() + " " + x.split("|")[2].strip() + " "
                        + x.split("|")[3].strip() + " clips/s"
                        for x in lines if x.startswith("| ") and not x.startswith("| backend"))
    if skips:
        summary += "; " + "; ".join(s.lstrip("- ") for s in skips)
    return {"status": status, "summary": summary, "lines": lines}
