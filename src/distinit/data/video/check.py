"""`distinit check-videos`: list every video under a folder or list that fails to decode."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from distinit.arguments import Parser
from distinit.data.video.io import (
    BACKENDS,
    DEFAULT_EXTENSIONS,
    VideoDecodeError,
    VideoInfo,
    list_videos,
    probe,
    read_frames,
)
from distinit.errors import UserError


def check_video(path: str | Path, backend: str = "pyav", full: bool = False) -> str | None:
    """None if `path` probes and its first and last frames decode, else the reason it fails.

    With `full`, one read from the first to the last frame (with PyAV: every frame decoded).
    """
    return inspect_video(path, backend, full)[0]


def inspect_video(path: str | Path, backend: str = "pyav",
                  full: bool = False) -> tuple[str | None, VideoInfo | None]:
    """(`check_video`'s reason or None, the probed header when the video decodes)."""
    try:
        info = probe(path, backend)
        last = info.num_frames - 1
        reads = [[0, last]] if full else [[0], [last]]
        for indices in reads:
            # strict: a last frame that does not decode means a truncated file, not a clamp
            frames = read_frames(path, indices, backend, strict=True)  # (N, H, W, 3)
            if frames.shape[1:3] != (info.height, info.width):
                return (f"frames decode at {frames.shape[2]}x{frames.shape[1]} but the header "
                        f"says {info.width}x{info.height}"), None
    except VideoDecodeError as e:
        return e.reason, None
    except UserError:  # a missing backend: the same for every file, so stop the scan
        raise
    except Exception as e:  # one file that breaks a decoder in a new way must not stop the scan
        return f"unexpected {type(e).__name__}: {e}", None
    return None, info


def check_videos(paths: list[Path], backend: str = "pyav", workers: int = 1,
                 full: bool = False) -> dict[Path, str]:
    """Check `paths` with `workers` processes; returns {bad path: reason}."""
    bad: dict[Path, str] = {}
    progress = tqdm(total=len(paths), desc="checking", unit="video", disable=None)
    if workers <= 1:
        for path in paths:
            if (reason := check_video(path, backend, full)) is not None:
                bad[path] = reason
            progress.update()
        progress.close()
        return bad
    done: set[Path] = set()
    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(check_video, path, backend, full): path for path in paths}
            for future in as_completed(futures):
                path = futures[future]
                if (reason := future.result()) is not None:
                    bad[path] = reason
                done.add(path)
                progress.update()
    except BrokenProcessPool:  # a decoder crashed its process; which file is unknown
        for path in paths:
            if path not in done:
                bad[path] = ("not checked: a worker process crashed (rerun on fewer files to "
                             "find it)")
    progress.close()
    return bad


def _shown(path: Path) -> str:
    # A name that is not valid UTF-8 would make print() fail on a strict UTF-8 stdout;
    # show its odd bytes as \xNN instead.
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def main(argv: list[str]) -> int:
    parser = Parser(
        prog="distinit check-videos",
        description="Probe and decode every video (first and last frame); list the bad ones. "
                    "Exits 1 if any video is bad.")
    parser.add_argument("videos", help="a folder (searched recursively), one video file, or a "
                                       "text file listing videos, one per line")
    parser.add_argument("--ext", default=",".join(e.lstrip(".") for e in DEFAULT_EXTENSIONS),
                        help="comma-separated video file extensions to look for in a folder")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--backend", default="pyav", choices=sorted(BACKENDS))
    parser.add_argument("--full", action="store_true",
                        help="decode every frame, not only the first and last (slower)")
    args = parser.parse_args(argv)
    paths = list_videos(args.videos, [e for e in args.ext.split(",") if e],
                        extensions_option="--ext")
    bad = check_videos(paths, args.backend, args.workers, args.full)
    for path in sorted(bad):
        print(f"BAD {_shown(path)}: {bad[path]}")
    print(f"checked {len(paths)} videos: {len(paths) - len(bad)} ok, {len(bad)} bad")
    return 1 if bad else 0
