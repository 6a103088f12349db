"""Reading and writing videos: the one interface the rest of the code reads videos through.

A "video" is a file any backend can open (PyAV, torchcodec, decord: `decoders`), or a frame
folder (`frame_folders`): a directory of JPEG/PNG frames with no subdirectories. Frames are always
(H, W, 3) uint8 RGB; a clip is (T, H, W, 3). Also here: listing the videos of a folder or list
file, and writing videos.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from distinit.data.video.decoders import (
    BACKENDS,
    Backend,
    VideoDecodeError,
    VideoInfo,
    first_line,
    pyav_frames,
    torchcodec_cuda_missing,
    torchcodec_on,
)
from distinit.data.video.frame_folders import (
    IMAGE_EXTENSIONS,
    folder_backend,
    frame_files,
    load_frame,
)
from distinit.errors import UserError

DEFAULT_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
# Where frames are decoded: "cuda" (NVDEC) with the torchcodec backend only.
DECODE_DEVICES = ("cpu", "cuda")


def probe(path: str | Path, backend: str = "pyav", device: str = "cpu",
          frame_template: str = "") -> VideoInfo:
    """Frame count, frame rate and size from container metadata (packets counted if absent).
    `frame_template` (data.frame_template): which files of a frame folder are its frames
    (`frame_folders.frame_files`); the same in every function here."""
    path = Path(path)
    with _errors_as_decode_error(path):
        return _backend_for(path, backend, device, frame_template).probe(path)


def read_frames(path: str | Path, indices: Sequence[int], backend: str = "pyav",
                strict: bool = False, device: str = "cpu", frame_template: str = "") -> np.ndarray:
    """Frames at `indices` (any order, repeats allowed) as (N, H, W, 3) uint8 RGB.

    Decodes only from the keyframe before the first wanted frame to the last one. Indices past
    the last decodable frame (metadata can overcount) read that frame, or raise if `strict`.
    `device="cuda"` (torchcodec only, see `check_decode_device`) decodes on the GPU and copies
    the frames back: the CPU is spared the decoding, not the copy.
    """
    indices = [int(i) for i in indices]
    if not indices or min(indices) < 0:
        raise ValueError(f"read_frames needs a non-empty list of indices >= 0, got {indices}")
    path = Path(path)
    wanted = sorted(set(indices))
    with _errors_as_decode_error(path):
        frames = _backend_for(path, backend, device, frame_template).read(path, wanted, strict)
    return frames[np.searchsorted(wanted, indices)]


def read_all_frames(path: str | Path, backend: str = "pyav", device: str = "cpu",
                    frame_template: str = "") -> np.ndarray:
    """Every frame of the video as (T, H, W, 3) uint8 RGB (`device` as for `read_frames`)."""
    path = Path(path)
    with _errors_as_decode_error(path):
        return _backend_for(path, backend, device, frame_template).read_all(path)


def check_decode_device(backend: str, device: str) -> None:
    """Raise a one-line UserError unless videos can be decoded on `device` here: "cpu" always;
    "cuda" needs the torchcodec backend, a CUDA GPU, and a torchcodec built with its CUDA
    decoder. Checked once, before any video is decoded."""
    if device not in DECODE_DEVICES:
        raise UserError(f"unknown decode device {device!r}; use one of {', '.join(DECODE_DEVICES)}")
    if device == "cpu":
        return
    if backend != "torchcodec":
        raise UserError(f"data.decode_device=cuda needs data.backend=torchcodec (the backend that "
                        f"decodes on the GPU), not {backend!r}; or set data.decode_device=cpu")
    import torch

    if not torch.cuda.is_available():
        raise UserError("data.decode_device=cuda but this torch sees no CUDA GPU (a CPU build, "
                        "or no driver); set data.decode_device=cpu")
    reason = torchcodec_cuda_missing()
    if reason:
        raise UserError(f"data.decode_device=cuda but torchcodec cannot decode on the GPU here "
                        f"({reason}); install a CUDA build of torchcodec matching torch, or set "
                        "data.decode_device=cpu")


def iter_frames(path: str | Path, frame_template: str = "") -> Iterator[np.ndarray]:
    """Yield the frames of a video file (PyAV) or frame folder one at a time, (H, W, 3) uint8."""
    path = Path(path)
    with _errors_as_decode_error(path):
        if path.is_dir():
            for file in frame_files(path, frame_template):
                yield load_frame(file)
            return
        _check_file(path)
        yield from pyav_frames(path)


def _backend_for(path: Path, backend: str, device: str = "cpu", frame_template: str = "") -> Backend:
    if backend not in BACKENDS:
        raise UserError(f"unknown video backend {backend!r}; choose one of {sorted(BACKENDS)}")
    if path.is_dir():
        return folder_backend(frame_template)
    _check_file(path)
    if device != "cpu":
        if backend != "torchcodec":
            raise UserError(f"only the torchcodec backend decodes on {device}, not {backend!r}")
        return torchcodec_on(device)
    return BACKENDS[backend]


def _check_file(path: Path) -> None:
    # Checked here once: some libraries say nothing useful about these (decord can abort).
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")


@contextmanager
def _errors_as_decode_error(path: Path) -> Iterator[None]:
    """Turn a decoding library's error about `path` into a VideoDecodeError naming it."""
    try:
        yield
    except av.FFmpegError as e:
        raise VideoDecodeError(path, e.strerror or str(e)) from None
    except RuntimeError as e:  # how torchcodec and decord report a bad file
        raise VideoDecodeError(path, first_line(e)) from None


# ---------------------------------------------------------------------------------------------
# Listing videos.


def is_frame_folder(path: str | Path, extensions: Sequence[str] = DEFAULT_EXTENSIONS) -> bool:
    """A directory holding image files, and no subdirectories or video files (of any known or
    given extension)."""
    path = Path(path)
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    return _is_frame_folder([e.name for e in entries if e.is_dir()],
                            [e.name for e in entries if not e.is_dir()], extensions)


def _is_frame_folder(dirs: list[str], files: list[str], extensions: Sequence[str]) -> bool:
    suffixes = [Path(f).suffix.lower() for f in files]
    videos = DEFAULT_EXTENSIONS + _normalize_extensions(extensions)
    return (not dirs and any(s in IMAGE_EXTENSIONS for s in suffixes)
            and not any(s in videos for s in suffixes))


def _normalize_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    return tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)


def list_videos(root_or_list: str | Path, extensions: Sequence[str] = DEFAULT_EXTENSIONS, *,
                extensions_option: str = "data.extensions") -> list[Path]:
    """Sorted videos under a folder (recursive; frame folders count as one video), one video
    file, or the videos in a list file (one path per line, relative to the list's folder; blank
    lines and # comments skipped).

    A file whose suffix is a known video extension is a video; any other file is a list.
    `extensions_option` is the option that errors tell the user to set (`--ext` for a CLI).
    """
    root = Path(root_or_list)
    if not root.exists():
        raise UserError(f"{root} does not exist; pass a folder of videos, a video file or a "
                        "text file listing them")
    suffixes = _normalize_extensions(extensions)
    if root.is_file():
        if root.suffix.lower() in DEFAULT_EXTENSIONS + suffixes:
            return [root]
        return _list_from_file(root, extensions_option)
    videos = []
    for folder, dirs, files in _walk(root):
        if _is_frame_folder(dirs, files, suffixes):
            videos.append(Path(folder))
        else:
            videos += [Path(folder) / f for f in files if Path(f).suffix.lower() in suffixes]
    if not videos:
        raise UserError(f"no videos ({', '.join(suffixes)} files or frame folders) found under "
                        f"{root}; check the path or set the extensions to look for with "
                        f"{extensions_option}")
    return sorted(videos)


def _walk(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk` of `root` that also enters symlinked folders, each real folder once.

    Corpora are often assembled from symlinks to folders on other disks, so they are followed;
    a folder already walked (a link to a parent, a second link to one target) is skipped by its
    (st_dev, st_ino), so a loop ends. The real tree is walked before any link, and names in
    sorted order, so a folder reached both ways keeps its real path, on every run.
    """
    seen: set[tuple[int, int]] = set()
    tops = [root]  # the root, then the symlinked folders found, in the order found
    for top in tops:
        if _identity(top) in seen:
            continue
        for folder, dirs, files in os.walk(top):  # never follows links itself
            seen.add(_identity(folder))
            # Hidden names are skipped: reencode writes its unfinished outputs under them.
            names = sorted(d for d in dirs if not d.startswith("."))
            links = [d for d in names if os.path.islink(os.path.join(folder, d))]
            tops += [Path(folder) / d for d in links]
            # Under a link, a real folder may be one walked already (the link's parent).
            dirs[:] = [d for d in names if d not in links
                       and _identity(os.path.join(folder, d)) not in seen]
            yield folder, names, [f for f in files if not f.startswith(".")]


def _identity(folder: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(folder)  # follows a link: its target's identity
    except OSError:  # unreadable: os.walk passes over it, as it always has
        return None
    return st.st_dev, st.st_ino


def _list_from_file(list_file: Path, extensions_option: str) -> list[Path]:
    data = list_file.read_bytes().removeprefix(codecs.BOM_UTF8)  # Notepad may write a BOM
    if b"\0" in data:  # UTF-8 text never holds NUL bytes; a video or UTF-16 text does
        raise UserError(
            f"{list_file} is not a text list of videos (it holds NUL bytes: binary data or "
            "UTF-16 text); pass a folder, a video file or a UTF-8 text file with one path per "
            f"line (if it is a video, add its extension with {extensions_option})")
    videos = []
    # Lines are decoded as the OS decodes file names, so a name that is not valid UTF-8
    # comes back as the same bytes and the file is found.
    for number, raw in enumerate(data.splitlines(), start=1):
        line = os.fsdecode(raw.strip())
        if not line or line.startswith("#"):
            continue
        path = Path(os.path.normpath(list_file.parent / line))
        if not path.exists():
            raise UserError(f"{list_file}, line {number}: {line} does not exist (relative paths "
                            f"are read from {list_file.parent}); fix or remove the line")
        videos.append(path)
    if not videos:
        raise UserError(f"{list_file} lists no videos; put one path per line")
    return sorted(set(videos))


# ---------------------------------------------------------------------------------------------
# Writing.


class VideoWriter:
    """Encode (H, W, 3) uint8 RGB frames one at a time with PyAV; the size comes from the first."""

    def __init__(self, path: str | Path, fps: float | Fraction = 25.0, codec: str = "libx264",
                 gop: int | None = None, pix_fmt: str | None = None,
                 options: dict[str, str] | None = None):
        self.container = av.open(str(path), mode="w")
        # A Fraction keeps rates like 30000/1001 exact.
        self.rate = Fraction(fps).limit_denominator(1001)
        self.codec, self.gop, self.pix_fmt, self.options = codec, gop, pix_fmt, options
        self.stream = None

    def _add_stream(self, height: int, width: int) -> None:
        self.stream = self.container.add_stream(self.codec, rate=self.rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = self.pix_fmt or ("yuvj420p" if self.codec == "mjpeg" else "yuv420p")
        if self.options:
            self.stream.options = dict(self.options)
        if self.gop is not None:
            self.stream.codec_context.gop_size = self.gop

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if self.stream is None:
            self._add_stream(*frame.shape[:2])
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():  # flush delayed (B-)frames
                self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0, codec: str = "libx264",
                gop: int | None = None, pix_fmt: str | None = None,
                options: dict[str, str] | None = None) -> None:
    """Encode `frames` (T, H, W, 3) uint8 RGB to `path` with PyAV (`options`: codec options,
    e.g. {"crf": "18"})."""
    with VideoWriter(path, fps, codec, gop, pix_fmt, options) as writer:
        for frame in np.asarray(frames, dtype=np.uint8):
            writer.write(frame)
