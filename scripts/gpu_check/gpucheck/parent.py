"""The parent: sets up PYTHONPATH and the context, runs each part in a process of its own
(runner.py) in order while the global deadline allows, and writes the report after each."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .constants import ERROR, FAIL, RESERVE_S, ROOT, SHIM, SKIPPED, TIMEOUT
from .plan import PARTS
from .pythonpath import import_check, unpack_wheels
from .report import Report
from .runner import run_child


def parent_main(args) -> int:
    t0 = time.time()
    deadline = t0 + args.budget_s
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    keep_work = bool(args.work)
    work = Path(args.work).resolve() if args.work else Path(
        tempfile.mkdtemp(prefix="distinit-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {p.key for p in PARTS}
    if unknown:
        print(f"gpu_check: unknown part(s) in --skip: {', '.join(sorted(unknown))}",
              file=sys.stderr)
        return 2

    if args.dry_run:  # CI's 2 cores are shared: one thread per process unless told otherwise
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONUNBUFFERED"] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")
    paths = [str(ROOT / "src")]
    wheels_note = "none given"
    if args.wheels:
        site, wheels_note = unpack_wheels(Path(args.wheels), work / "site")
        if site:
            paths.append(str(site))
    av_real = import_check("av", paths)
    cv2_ok = import_check("cv2", paths)
    if args.video_io == "pyav" or (args.video_io == "auto" and av_real.startswith("ok")):
        video_io = "pyav"
        video_note = f"PyAV ({av_real})"
    elif cv2_ok.startswith("ok"):
        video_io = "opencv"
        paths.insert(0, str(SHIM))  # before the wheels, which may hold a PyAV
        why = "asked for with --video-io opencv" if args.video_io == "opencv" else \
            f"PyAV does not import: {av_real}"
        cv2_version = cv2_ok.removeprefix("ok ")
        video_note = (f"OpenCV stand-in for PyAV (scripts/gpu_check/avshim, cv2 {cv2_version}; "
                      f"{why}): videos written as mp4v, decoding speed is OpenCV's")
    else:
        video_io = "none"
        video_note = f"none: PyAV does not import ({av_real}), nor cv2 ({cv2_ok})"
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))

    world = ""
    if args.world:
        world = str(Path(args.world).resolve())
    ctx = {
        "dry_run": args.dry_run, "device": device, "work": str(work), "world": world,
        "video_io": video_io, "video_note": video_note, "wheels_note": wheels_note,
        "av_real": av_real, "python": sys.executable,
        "bench_workers": args.bench_workers or min(16, os.cpu_count() or 1),
        "bench_videos": args.bench_videos, "peak_tflops": args.peak_tflops,
    }
    report = Report(out, args, t0, ctx)
    report.write()
    for part in PARTS:
        if part.key in skip:
            report.add(part, skipped("--skip"), 0.0)
            continue
        if args.dry_run and part.dry_skip:
            report.add(part, skipped(part.dry_skip), 0.0)
            continue
        left = deadline - time.time() - RESERVE_S
        needed = min(part.min_s, part.dry_budget) if args.dry_run else part.min_s
        if left < needed:
            report.add(part, skipped(f"global deadline: {max(left, 0):.0f} s of --budget-s "
                                     f"{args.budget_s:g} left, this part needs {needed} s"), 0.0)
            continue
        limit = min(part.dry_budget if args.dry_run else part.budget, left)
        print(f"gpu_check: {part.key} (up to {limit:.0f} s) ...", file=sys.stderr, flush=True)
        t = time.time()
        res = run_child(part, {**ctx, "deadline": time.time() + limit}, work, limit)
        report.add(part, res, time.time() - t)
        print(f"gpu_check: {part.key}: {res['status']} ({time.time() - t:.1f} s) "
              f"{res['summary']}", file=sys.stderr, flush=True)
    report.finish()
    if not args.no_logs:
        copy_logs(work / "logs", out.with_name(out.stem + "_logs"))
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"gpu_check: report written to {out}", file=sys.stderr)
    bad = [r for _, r, _ in report.results if r["status"] in (FAIL, ERROR, TIMEOUT)]
    return 1 if bad else 0


def skipped(reason: str) -> dict:
    return {"status": SKIPPED, "summary": reason, "lines": []}


def copy_logs(src: Path, dst: Path, limit: int = 200_000) -> None:
    """The parts' logs next to the report (the last `limit` bytes of each)."""
    files = sorted(src.glob("*.log"))
    if not files:
        return
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        (dst / f.name).write_bytes(f.read_bytes()[-limit:])
