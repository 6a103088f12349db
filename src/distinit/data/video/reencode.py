"""`distinit reencode`: rewrite a dataset for fast random access.

Short keyframe intervals make a random clip cost a few frames of decoding instead of a whole
GOP; `--frames` writes frame folders of JPEGs instead. The output mirrors the input's folder
structure, existing outputs are skipped (so an interrupted run resumes), and every output is
written under a hidden temporary name and renamed when complete. Audio is dropped.

With `--keep-names` every video keeps its name and extension (an H.264 stream in `.avi`, say),
so the official split files, which list `.avi` names, still find every re-encoded video.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

from distinit.arguments import Parser
from distinit.data.video.frame_folders import FPS_FILE
from distinit.data.video.io import (
    DEFAULT_EXTENSIONS,
    VideoDecodeError,
    VideoWriter,
    is_frame_folder,
    iter_frames,
    list_videos,
    probe,
)
from distinit.errors import UserError

CONTAINERS = {"libx264": ".mp4", "h264": ".mp4", "libx265": ".mp4", "mpeg4": ".mp4",
              "mjpeg": ".avi", "libvpx-vp9": ".webm", "libvpx": ".webm"}
JPEG_QUALITY = 90


def output_path(video: Path, base: Path, out_dir: Path, codec: str, frames: bool,
                keep_names: bool = False) -> Path:
    """Where `video` (under `base`) goes in `out_dir`: same relative path, the codec's container
    suffix (with `keep_names`, its own)."""
    relative = video.relative_to(base)
    if video.is_dir():  # a frame folder keeps its name, dots included
        return out_dir / relative if frames else out_dir / f"{relative}{CONTAINERS[codec]}"
    if keep_names and not frames:
        return out_dir / relative
    return out_dir / relative.with_suffix("" if frames else CONTAINERS[codec])


def check_containers(suffixes: set[str], codec: str) -> None:
    """Refuse, before anything is written, a container that cannot hold `codec` (`--keep-names`
    keeps each video's own): asked of FFmpeg itself, by adding the stream to an empty file."""
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in sorted(suffixes):
            try:
                with av.open(str(Path(tmp) / f"probe{suffix}"), "w") as container:
                    container.add_stream(codec, rate=25)
            except (ValueError, av.error.FFmpegError) as e:
                raise UserError(f"--keep-names keeps the {suffix} files' container, which cannot "
                                f"hold {codec} ({e}); choose another --codec, or drop "
                                "--keep-names") from None


def output_size(height: int, width: int, short_side: int | None,
                even: bool = True) -> tuple[int, int]:
    """(height, width) scaled to `short_side`; `even` rounds down as 4:2:0 video needs."""
    if short_side is not None:
        scale = short_side / min(height, width)
        height, width = round(height * scale), round(width * scale)
    if even:
        height, width = max(2, height - height % 2), max(2, width - width % 2)
    return height, width


def _resized(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) -> (height, width, 3): a crop of one odd row/column, else an antialiased resize."""
    H, W, _ = frame.shape
    if H - height in (0, 1) and W - width in (0, 1):
        return frame[:height, :width]
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))


def reencode_video(src: Path, dst: Path, gop: int = 16, codec: str = "libx264",
                   short_side: int | None = None, frames: bool = False) -> None:
    """Re-encode `src` to the video file `dst`, or with `frames` to the frame folder `dst`."""
    info = probe(src)
    height, width = output_size(info.height, info.width, short_side, even=not frames)
    # Hidden, and keeping the suffix that tells PyAV the container.
    tmp = dst.parent / f".{dst.stem}.partial-{os.getpid()}{dst.suffix}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if frames:
            tmp.mkdir()
            for i, frame in enumerate(iter_frames(src)):
                Image.fromarray(_resized(frame, height, width)).save(
                    tmp / f"{i:06d}.jpg", quality=JPEG_QUALITY)
            (tmp / FPS_FILE).write_text(f"{info.fps}\n")
        else:
            with VideoWriter(tmp, fps=info.fps, codec=codec, gop=gop) as writer:
                for frame in iter_frames(src):
                    writer.write(_resized(frame, height, width))
        os.replace(tmp, dst)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()


def _reencode_one(src: Path, dst: Path, **options) -> str | None:
    """Run in a worker: None on success, else the reason `src` failed."""
    try:
        reencode_video(src, dst, **options)
    except VideoDecodeError as e:
        return e.reason
    except Exception as e:  # encoding or writing failed: report it, go on with the others
        return f"{type(e).__name__}: {e}"
    return None


def _base_folder(source: Path, videos: list[Path]) -> Path:
    """The folder the output mirrors: the source folder, or what a list's videos share."""
    if source.is_dir() and not is_frame_folder(source):
        return source
    return Path(os.path.commonpath([v.parent for v in videos]))


def main(argv: list[str]) -> int:
    parser = Parser(
        prog="distinit reencode",
        description="Re-encode videos with short keyframe intervals (or to JPEG frame folders), "
                    "mirroring the folder structure. Skips outputs that exist; exits 1 if any "
                    "input failed.")
    parser.add_argument("source", help="a folder of videos or a text file listing them")
    parser.add_argument("out_dir")
    parser.add_argument("--gop", type=int, default=16, help="frames between keyframes")
    parser.add_argument("--frames", action="store_true", help="write frame folders of JPEGs")
    parser.add_argument("--codec", default="libx264", choices=sorted(CONTAINERS))
    parser.add_argument("--short-side", type=int, default=None,
                        help="resize so the shorter side has this many pixels")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep-names", action="store_true",
                        help="keep every video's name and extension (the names split files list)")
    parser.add_argument("--ext", default=",".join(e.lstrip(".") for e in DEFAULT_EXTENSIONS),
                        help="comma-separated video file extensions to look for in a folder")
    args = parser.parse_args(argv)
    if args.gop < 1 or (args.short_side is not None and args.short_side < 2):
        raise UserError("--gop must be >= 1 and --short-side >= 2")
    try:
        av.codec.Codec(args.codec, "w")
    except av.codec.codec.UnknownCodecError:
        raise UserError(f"this FFmpeg (PyAV {av.__version__}) has no {args.codec} encoder; "
                        f"choose another --codec") from None

    source, out_dir = Path(args.source), Path(args.out_dir)
    videos = list_videos(source, [e for e in args.ext.split(",") if e], extensions_option="--ext")
    base = _base_folder(source, videos)
    if out_dir.resolve() == base.resolve() or base.resolve() in out_dir.resolve().parents:
        # Outputs there would be taken for its inputs (already done), or be read as videos of
        # the source by the next command that lists it.
        raise UserError(f"{out_dir} is the source folder {base} or inside it; write the "
                        "re-encoded videos to a folder outside it")
    if args.keep_names and not args.frames:
        check_containers({v.suffix.lower() for v in videos if not v.is_dir()}, args.codec)
    jobs = {v: output_path(v, base, out_dir, args.codec, args.frames, args.keep_names)
            for v in videos}
    seen: dict[Path, Path] = {}
    for src, dst in jobs.items():
        if dst in seen:
            raise UserError(f"{seen[dst]} and {src} would both be written to {dst}; rename one")
        seen[dst] = src
    todo = {src: dst for src, dst in jobs.items() if not dst.exists()}
    options = dict(gop=args.gop, codec=args.codec, short_side=args.short_side, frames=args.frames)

    failed: dict[Path, str] = {}
    progress = tqdm(total=len(todo), desc="reencoding", unit="video", disable=None)
    if args.workers <= 1:
        for src, dst in todo.items():
            if (reason := _reencode_one(src, dst, **options)) is not None:
                failed[src] = reason
            progress.update()
    else:
        try:
            with ProcessPoolExecutor(max_workers=args.workers) as pool:
                futures = {pool.submit(_reencode_one, src, dst, **options): src
                           for src, dst in todo.items()}
                for future in as_completed(futures):
                    if (reason := future.result()) is not None:
                        failed[futures[future]] = reason
                    progress.update()
        except BrokenProcessPool:
            raise UserError("a worker process crashed (a decoder bug on some input?); run the "
                            "same command again: finished outputs are kept and skipped") from None
    progress.close()
    for src in sorted(failed):
        print(f"FAILED {src}: {failed[src]}")
    print(f"{len(todo) - len(failed)} written, {len(jobs) - len(todo)} already done, "
          f"{len(failed)} failed -> {out_dir}")
    return 1 if failed else 0
