"""`distinit flow SRC OUT`: dense optical flow of every video in a folder or list.

Algorithms (`--algorithm`, alias `--method`): with OpenCV, `dis` (default; DIS with OpenCV's
MEDIUM preset: in benchmarks/bench_flow.py about 4x slower than FAST but with 1.4-3x lower
error, and still ~2x faster than Farneback), `farneback`, and `tvl1` (Dual TV-L1, the flow of
TSN and I3D; needs opencv-contrib); with torchvision, `raft_small` and `raft_large` (RAFT, the
flow MSCL's MoDist trains on; weights from a local file, `flow_raft`). `--gap G` computes the
flow from frame t to t + G (MSCL's is 8) instead of t + 1. The format of the files
(one `(T, H, W, 2)` .npy per video, uint8 quantised with a bound of 20 px as TSN and MMAction2
do, or float16 pixels) is in `flow_store`; its readers are re-exported here. Existing outputs
are skipped, so an interrupted run resumes; a video that fails to decode is reported and
skipped. See docs/FLOW.md.

Under torchrun (`--nnodes N`, one node or many), rank r computes every world-th video from the
r-th; rank 0 writes flow.json and clears a killed run's leftovers before any rank starts.

One writer per OUT: a run holds the folder's lock (`engine.lock`; a second run into it is one
line naming the holder) and removes the temporary files a killed run left there. Its worker
processes die with it, however it dies (kill -9 included); SIGTERM or Ctrl-C stops it at once,
with one line saying how many videos are done (exit 143 or 130): run it again to continue.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from types import ModuleType

import numpy as np
from tqdm import tqdm

from distinit.arguments import Parser
from distinit.data.flow.store import (
    DTYPES,
    claim_out_dir,
    dequantize,
    flow_file,
    flow_meta,
    is_complete,
    own_out_dir,
    quantize,
    read_flow_meta,
    remove_partial,
    save_flow,
)
from distinit.data.video.io import (
    DEFAULT_EXTENSIONS,
    VideoDecodeError,
    list_videos,
    read_all_frames,
)
from distinit.data.video.reencode import output_size
from distinit.engine.children import die_with
from distinit.engine.interrupt import Interrupted, Stop, signal_name, stop_on_signals
from distinit.errors import UserError

__all__ = ["ALGORITHMS", "METHODS", "RAFT_MODELS", "dequantize", "flow_estimator", "flow_file",
           "main", "read_flow_meta", "video_flow"]


class AllVideosFailed(UserError):
    exit_code = 1  # as for a run with nothing to show; bad input arguments exit 2


# (prev, next) (H, W) uint8 gray -> (H, W, 2) float32 flow from prev to next, in pixels.
Estimator = Callable[[np.ndarray, np.ndarray], np.ndarray]
# DIS matches 8x8 patches: smaller frames are an OpenCV error.
MIN_SHORT_SIDE = 16


def import_cv2() -> ModuleType:
    """OpenCV, imported on first use so that the rest of distinit never needs it."""
    try:
        import cv2
    except ImportError as e:
        raise UserError(f"optical flow needs OpenCV, which is not installed; install it with "
                        f"pip install -e '.[opencv]' ({e})") from None
    return cv2


def _dis(cv2: ModuleType) -> Estimator:
    dis = cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_MEDIUM)
    return lambda prev, nxt: dis.calc(prev, nxt, None)


def _farneback(cv2: ModuleType) -> Estimator:
    # OpenCV's documented example settings: 3 pyramid levels at scale 0.5, 15-px windows.
    return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale=0.5,
                                                          levels=3, winsize=15, iterations=3,
                                                          poly_n=5, poly_sigma=1.2, flags=0)


def _tvl1(cv2: ModuleType) -> Estimator:
    if not hasattr(cv2, "optflow"):  # TV-L1 lives in opencv-contrib since OpenCV 4
        raise UserError("the tvl1 algorithm needs opencv-contrib: pip uninstall "
                        "opencv-python-headless, then pip install opencv-contrib-python-headless "
                        "(or pip install -e '.[opencv]'); or choose --algorithm dis or farneback")
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    return lambda prev, nxt: tvl1.calc(prev, nxt, None)


# OpenCV's, a pair of gray frames at a time; RAFT (torchvision builders, run by `flow_raft`)
# takes RGB frames in batches of pairs.
ALGORITHMS: dict[str, Callable[[ModuleType], Estimator]] = {
    "dis": _dis, "farneback": _farneback, "tvl1": _tvl1}
RAFT_MODELS = ("raft_small", "raft_large")
METHODS = (*ALGORITHMS, *RAFT_MODELS)
RAFT_ITERS = 20  # MSCL's (its tools/RAFT/inference.py:121); torchvision's default is 12


def flow_estimator(algorithm: str) -> Estimator:
    """A function (prev, next) gray uint8 frames -> (H, W, 2) float32 flow in pixels."""
    if algorithm not in ALGORITHMS:
        raise UserError(f"unknown flow algorithm {algorithm!r}; choose one of {list(ALGORITHMS)}")
    return ALGORITHMS[algorithm](import_cv2())


def video_flow(frames: np.ndarray, meta: dict, estimator: Estimator | None = None,
               device: str = "cpu") -> np.ndarray:
    """(T, H, W, 3) uint8 RGB -> (T, h, w, 2) flow in the stored format that `meta` describes
    (see `flow_store.flow_meta`); frames resized to `meta["short_side"]` first if not 0.
    RAFT runs on `device`; `estimator` replaces an OpenCV algorithm's."""
    cv2 = import_cv2()
    raft = meta["algorithm"] in RAFT_MODELS
    if not raft:
        estimator = estimator or flow_estimator(meta["algorithm"])
    T, H, W, _ = frames.shape
    h, w = output_size(H, W, meta["short_side"] or None, even=False)
    # INTER_AREA averages when shrinking, so fine texture does not alias into false motion.
    interpolation = cv2.INTER_AREA if h < H else cv2.INTER_LINEAR
    resize = (lambda g: g) if (h, w) == (H, W) else (
        lambda g: cv2.resize(g, (w, h), interpolation=interpolation))

    def gray(t: int) -> np.ndarray:  # (h, w) uint8
        return resize(cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY))

    gap = meta.get("gap", 1)  # flow t is from frame t to frame t + gap
    if gap >= T:  # no pair of frames that far apart: zero flow, in stored units
        return quantize(np.zeros((T, h, w, 2), np.float32), meta)
    # Quantised pair by pair: a float32 copy of a whole long video would not fit in memory.
    out = np.empty((T, h, w, 2), np.uint8 if meta["dtype"] == "uint8" else np.float16)
    if raft:
        from distinit.data.flow.raft import BATCH, load_raft, raft_flow

        model = load_raft(meta["algorithm"], meta["weights"], device)
        for start in range(0, T - gap, BATCH):
            stop = min(start + BATCH, T - gap)
            rgb = np.stack([resize(frames[t]) for t in range(start, stop + gap)])  # (n+gap, h, w, 3)
            out[start:stop] = quantize(raft_flow(model, rgb, meta["iters"], device, gap), meta)
    else:
        grays = [gray(t) for t in range(min(gap, T))]  # a window of the last `gap` frames
        for t in range(T - gap):
            grays.append(gray(t + gap))
            out[t] = quantize(estimator(grays.pop(0), grays[-1]), meta)  # (h, w, 2)
    out[T - gap:] = out[T - gap - 1]  # so that frame t of the RGB video indexes flow t
    return out


def _init_worker(algorithm: str, parent: int) -> None:
    die_with(parent)  # kill -9 of the parent takes the workers along
    # Ctrl-C reaches the whole process group: the parent stops the workers, not each worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The pool's processes already fill the cores; OpenCV's or torch's own threads would
    # oversubscribe.
    import_cv2().setNumThreads(1)
    if algorithm in RAFT_MODELS:
        import torch

        torch.set_num_threads(1)


def _flow_one(video: Path, dst: Path, meta: dict, device: str) -> tuple[int, str | None]:
    """Run in a worker: (frames written, None), or (0, the reason `video` failed)."""
    try:
        flow = video_flow(read_all_frames(video), meta, device=device)
        save_flow(dst, flow)
    except VideoDecodeError as e:
        return 0, e.reason
    except Exception as e:  # an OpenCV error on one odd video must not stop the others
        message = (str(e).strip() or "no message").splitlines()[0]
        return 0, f"{type(e).__name__}: {message}"
    return len(flow), None


def _shown(path: Path) -> str:
    # A name that is not valid UTF-8 must not make print() fail on a strict UTF-8 stream.
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _run(jobs: dict[Path, Path], meta: dict, workers: int, device: str,
         tally: dict[str, int]) -> None:
    """Compute every job, warning about each failure as it happens; counts the videos
    `written` and their `frames` in `tally` as they finish."""
    progress = tqdm(total=len(jobs), desc="flow", unit="video", disable=None)

    def record(video: Path, result: tuple[int, str | None]) -> None:
        count, reason = result
        if reason is None:
            tally["written"] += 1
            tally["frames"] += count
        else:
            progress.write(f"warning: skipping video {_shown(video)}: {reason}", file=sys.stderr)
        progress.update()

    try:
        if workers <= 1:
            for video, dst in jobs.items():
                record(video, _flow_one(video, dst, meta, device))
            return
        # spawn: a forked copy of a parent holding OpenCV's or torch's threads can deadlock.
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                   initializer=_init_worker,
                                   initargs=(meta["algorithm"], os.getpid()))
        try:
            futures = {pool.submit(_flow_one, video, dst, meta, device): video
                       for video, dst in jobs.items()}
            for future in as_completed(futures):  # in the order videos finish
                record(futures[future], future.result())
        except Stop:  # the videos in progress are dropped, not waited for (no public API)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.kill()
            raise
        except BrokenProcessPool:
            raise UserError("a worker process crashed (a decoder or OpenCV bug on some video?); "
                            "run the same command again: finished outputs are kept and "
                            "skipped") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        progress.close()


def _raft_settings(algorithm: str, weights: str, iters: int, device: str) -> tuple[dict, str]:
    """(RAFT's entries of flow.json, the device it runs on); bad weights fail here, once."""
    from distinit.data.flow.raft import check_weights, load_raft, weights_digest
    from distinit.engine.dist import resolve_device

    path = check_weights(algorithm, weights)
    device = str(resolve_device(device))
    load_raft(algorithm, str(path), device)
    return {"weights": str(path), "weights_sha256": weights_digest(path), "iters": iters}, device


def _ranks() -> tuple[int, int]:
    """(global rank, world size) under torchrun, (0, 1) alone: flow needs no process group but
    the one barrier below, so a rank that dies stops only its own share."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _barrier(world: int) -> None:
    if world > 1:
        from distinit.engine import dist

        dist.setup("cpu")
        dist.barrier()


def compute_flow(src: str | Path, out: str | Path, algorithm: str = "dis", dtype: str = "uint8",
                 bound: float = 20.0, short_side: int = 0, workers: int = 1,
                 extensions: list[str] | None = None, weights: str = "",
                 iters: int = RAFT_ITERS, device: str = "auto", gap: int = 1) -> dict:
    """Flow of every video under `src` not already in `out` (see `main`): the counts. Flow t
    is from frame t to t + `gap`. `weights`, `iters` and `device` are RAFT's."""
    if algorithm in RAFT_MODELS:
        import_cv2()  # frames are resized with OpenCV
        method, device = _raft_settings(algorithm, weights, iters, device)
    else:
        flow_estimator(algorithm)  # a missing OpenCV or contrib fails here, once
        method, device = {}, "cpu"
    src, out = Path(src), Path(out)
    videos = list_videos(src, extensions or [e.lstrip(".") for e in DEFAULT_EXTENSIONS],
                         extensions_option="--extensions")
    jobs = {video: flow_file(video, src, out) for video in videos}
    seen: dict[Path, Path] = {}
    for video, dst in jobs.items():
        if dst in seen:
            raise UserError(f"{_shown(seen[dst])} and {_shown(video)} would both be written to "
                            f"{_shown(dst)}; rename one")
        seen[dst] = video
    meta = flow_meta(algorithm, dtype, bound, short_side, gap, **method)
    tally, todo = {"written": 0, "frames": 0}, jobs
    rank, world = _ranks()
    try:
        with stop_on_signals(), own_out_dir(out):
            if rank == 0:  # one writer of flow.json, and the partial files are gone before...
                claim_out_dir(out, meta)
            _barrier(world)  # ... any rank starts writing
            claim_out_dir(out, meta)  # every rank checks the settings
            # Under torchrun each rank takes every world-th video (one node or many).
            todo = {video: dst for i, (video, dst) in enumerate(jobs.items())
                    if i % world == rank and not is_complete(dst)}
            jobs = {video: dst for i, (video, dst) in enumerate(jobs.items()) if i % world == rank}
            start = time.perf_counter()
            try:
                _run(todo, meta, workers, device, tally)
            except Stop:
                remove_partial(out)  # the videos in progress when it stopped: not whole
                raise
    except Stop as stop:
        # On disk, not tally: a video may be written and its result not yet counted.
        done = len(jobs) - len(todo) + sum(is_complete(dst) for dst in todo.values())
        raise Interrupted(f"stopped by {signal_name(stop.signum)}: {done} of {len(jobs)} videos "
                          f"have their flow in {_shown(out)}; run the same command again to do "
                          "the rest (finished outputs are kept and skipped)", stop.signum) from None
    seconds = time.perf_counter() - start
    written, frames = tally["written"], tally["frames"]
    failed = len(todo) - written
    share = f"rank {rank} of {world}: " if world > 1 else ""
    print(f"{share}{written} written, {len(jobs) - len(todo)} skipped (already done), {failed} failed; "
          f"{frames} frames in {seconds:.1f} s ({frames / max(seconds, 1e-9):.1f} frames/s) "
          f"-> {_shown(out)}")
    if jobs and failed == len(jobs):
        raise AllVideosFailed(f"all {failed} videos failed (see the warnings above); nothing "
                              "was written")
    return {"written": written, "skipped": len(jobs) - len(todo), "failed": failed,
            "frames": frames, "seconds": seconds}


def main(argv: list[str]) -> int:
    parser = Parser(
        prog="distinit flow",
        description="Dense optical flow of every video under SRC, one (T, H, W, 2) .npy per "
                    "video under OUT (see docs/FLOW.md). Resumes: existing outputs are skipped. "
                    "Bad videos are reported and skipped; exits 1 only if every video failed.")
    parser.add_argument("src", help="a folder of videos (searched recursively), one video, or a "
                                    "text file listing videos, one per line")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--algorithm", "--method", default="dis", choices=METHODS,
                        help="dis, farneback, tvl1 (OpenCV; tvl1 needs opencv-contrib) or "
                             "raft_small, raft_large (torchvision; need --weights)")
    parser.add_argument("--dtype", default="uint8", choices=DTYPES,
                        help="uint8: quantised to [-bound, bound]; float16: pixels")
    parser.add_argument("--bound", type=float, default=20.0,
                        help="uint8 only: flow clipped to +-bound pixels (TSN and MMAction2: 20)")
    parser.add_argument("--short-side", type=int, default=0,
                        help="resize frames to this shorter side first (flow in pixels of the "
                             "resized frames); 0: native size")
    parser.add_argument("--gap", type=int, default=1,
                        help="flow t is from frame t to frame t + GAP (default 1; MSCL's MoDist "
                             "uses 8, tools/misc/flow_extraction_meg_k400.py:288)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes, each with one OpenCV (or torch) thread; default: one "
                             "per core, but 1 for RAFT (torch's own threads use the cores)")
    raft_args = parser.add_argument_group("RAFT (raft_small, raft_large)")
    raft_args.add_argument("--weights", default="",
                           help="a torchvision RAFT state dict of the same model, e.g. "
                                "raft_large_C_T_V1-22a6c225.pth; nothing is downloaded")
    raft_args.add_argument("--iters", type=int, default=None,
                           help=f"refinement iterations (default {RAFT_ITERS}, as MSCL; "
                                "torchvision's default is 12)")
    raft_args.add_argument("--device", default="auto",
                           help="auto (a GPU if there is one), cpu, cuda or cuda:N")
    parser.add_argument("--extensions", default=",".join(e.lstrip(".") for e in DEFAULT_EXTENSIONS),
                        help="comma-separated video file extensions to look for in a folder")
    args = parser.parse_args(argv)
    if not args.bound > 0:
        raise UserError(f"--bound must be > 0 pixels, got {args.bound}")
    if args.short_side != 0 and args.short_side < MIN_SHORT_SIDE:
        raise UserError(f"--short-side must be 0 (native size) or >= {MIN_SHORT_SIDE}, got "
                        f"{args.short_side}")
    if args.gap < 1:
        raise UserError(f"--gap must be >= 1 frame, got {args.gap}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    raft = args.algorithm in RAFT_MODELS
    if not raft and (args.weights or args.iters is not None):
        raise UserError("--weights and --iters are for --algorithm raft_small or raft_large")
    if args.iters is not None and args.iters < 1:
        raise UserError(f"--iters must be >= 1, got {args.iters}")
    workers = args.workers or (1 if raft else os.cpu_count() or 1)
    compute_flow(args.src, args.out, args.algorithm, args.dtype, args.bound, args.short_side,
                 workers, [e for e in args.extensions.split(",") if e], args.weights,
                 args.iters or RAFT_ITERS, args.device, args.gap)
    return 0
