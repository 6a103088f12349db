"""Reading and writing videos: one small interface over PyAV, torchcodec, decord and frame folders.

A "video" is a file any backend can open, or a frame folder: a directory of JPEG/PNG frames
(sorted by name, numbers compared as numbers) with no subdirectories. Frames are always
(H, W, 3) uint8 RGB; a clip is (T, H, W, 3).
"""

from __future__ import annotations

import codecs
import functools
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from distinit.errors import UserError

DEFAULT_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Frame folders carry no frame rate; `reencode --frames` writes the source's into this file.
FPS_FILE = "fps.txt"
DEFAULT_FOLDER_FPS = 30.0
# Where frames are decoded: "cuda" (NVDEC) with the torchcodec backend only.
DECODE_DEVICES = ("cpu", "cuda")


class VideoDecodeError(UserError):
    """A video that cannot be opened or decoded; `path` and `reason` say which and why."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot decode video {path}: {reason}. Run `distinit check-videos` on "
                         "the dataset to list every bad file, then re-encode or remove them.")

    def __reduce__(self):  # keep it picklable across worker processes
        return type(self), (self.path, self.reason)


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


@dataclass(frozen=True)
class Backend:
    """How one library probes a video, reads sorted unique frame indices, and reads all frames."""

    probe: Callable[[Path], VideoInfo]
    read: Callable[[Path, list[int], bool], np.ndarray]  # (path, wanted, strict) -> (N, H, W, 3)
    read_all: Callable[[Path], np.ndarray]


def probe(path: str | Path, backend: str = "pyav", device: str = "cpu") -> VideoInfo:
    """Frame count, frame rate and size from container metadata (packets counted if absent)."""
    path = Path(path)
    with _errors_as_decode_error(path):
        return _backend_for(path, backend, device).probe(path)


def read_frames(path: str | Path, indices: Sequence[int], backend: str = "pyav",
                strict: bool = False, device: str = "cpu") -> np.ndarray:
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
        frames = _backend_for(path, backend, device).read(path, wanted, strict)  # (len(wanted), H, W, 3)
    return frames[np.searchsorted(wanted, indices)]


def read_all_frames(path: str | Path, backend: str = "pyav", device: str = "cpu") -> np.ndarray:
    """Every frame of the video as (T, H, W, 3) uint8 RGB (`device` as for `read_frames`)."""
    path = Path(path)
    with _errors_as_decode_error(path):
        return _backend_for(path, backend, device).read_all(path)


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
    reason = _torchcodec_cuda_missing()
    if reason:
        raise UserError(f"data.decode_device=cuda but torchcodec cannot decode on the GPU here "
                        f"({reason}); install a CUDA build of torchcodec matching torch, or set "
                        "data.decode_device=cpu")


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield the frames of a video file (PyAV) or frame folder one at a time, (H, W, 3) uint8."""
    path = Path(path)
    with _errors_as_decode_error(path):
        if path.is_dir():
            for file in _folder_frames(path):
                yield _load_image(file)
            return
        _check_file(path)
        with _open_pyav(path) as container:
            count, to_rgb = 0, _rgb_converter()
            for frame in container.decode(_video_stream(container, path)):
                count += 1
                yield to_rgb(frame)
        if count == 0:
            raise VideoDecodeError(path, "no frame could be decoded")


# ---------------------------------------------------------------------------------------------
# PyAV: the default backend.


def _open_pyav(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except av.InvalidDataError:
        raise VideoDecodeError(path, "FFmpeg cannot read it: not a video, corrupt, or truncated "
                                     "(an mp4 cut short loses its index)") from None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(path, "no video stream in the file")
    stream = container.streams.video[0]
    # One thread: data-loader workers already fill the cores, and on 2 cores frame threading
    # ("AUTO") measured no faster on 8-frame random-access clips, for more CPU time per clip.
    stream.codec_context.thread_count = 1
    return stream


def _stream_fps(stream: av.VideoStream, path: Path) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise VideoDecodeError(path, "the video stream has no frame rate")
    return Fraction(rate)


def _pyav_probe(path: Path) -> VideoInfo:
    with _open_pyav(path) as container:
        stream = _video_stream(container, path)
        fps = _stream_fps(stream, path)
        num_frames = stream.frames
        if not num_frames:  # webm/mkv/ts keep no frame count: count packets (no decoding)
            num_frames = sum(1 for packet in container.demux(stream) if packet.size)
        height, width = stream.codec_context.height, stream.codec_context.width
    if num_frames == 0:
        raise VideoDecodeError(path, "the video stream has no frames")
    if not height or not width:
        raise VideoDecodeError(path, "the video stream has no frame size")
    return VideoInfo(num_frames=num_frames, fps=float(fps), height=height, width=width)


class _Retry(Exception):
    """A shortcut missed (an inexact seek index, a file shorter than its metadata): redo slowly."""


def _pyav_read(path: Path, wanted: list[int], strict: bool) -> np.ndarray:
    try:
        return _pyav_decode(path, wanted, strict, fast=True)
    except _Retry:
        return _pyav_decode(path, wanted, strict, fast=False)


def _pyav_decode(path: Path, wanted: list[int], strict: bool, fast: bool) -> np.ndarray:
    """Decode the sorted unique `wanted` frames; `fast` seeks and skips what it can."""
    out: list[np.ndarray] = []
    with _open_pyav(path) as container:
        stream = _video_stream(container, path)
        fps = _stream_fps(stream, path)
        start = stream.start_time or 0

        def to_index(pts: int) -> int:  # frames since the stream's first timestamp
            return round((pts - start) * stream.time_base * fps)

        seek = fast and wanted[0] > 0
        if seek:  # to the keyframe at or before the first wanted frame
            target = start + int(wanted[0] / (fps * stream.time_base))
            container.seek(target, stream=stream, backward=True, any_frame=False)
        # In intra-only codecs (MJPEG) the frames between wanted ones need not be decoded.
        skip_packets = fast and stream.codec_context.codec.intra_only
        index, last, skipped = -1, None, False
        to_rgb = _rgb_converter()
        for packet in container.demux(stream):
            if (skip_packets and packet.size and packet.pts is not None
                    and to_index(packet.pts) < wanted[len(out)]):
                skipped = True
                continue
            for frame in packet.decode():
                if frame.pts is None:  # no timestamps: only counting from the start is reliable
                    if seek:
                        raise _Retry
                    index += 1
                else:
                    index = to_index(frame.pts)
                if seek and last is None and index > wanted[0]:
                    raise _Retry
                last, skipped = frame, False
                if index < wanted[len(out)]:
                    continue
                rgb = to_rgb(frame)  # (H, W, 3)
                # A timestamp gap (variable frame rate) gives the skipped indices this frame.
                while len(out) < len(wanted) and wanted[len(out)] <= index:
                    out.append(rgb)
                if len(out) == len(wanted):
                    break
            if len(out) == len(wanted):
                break
        if last is None and not seek:
            raise VideoDecodeError(path, "no frame could be decoded")
        if last is None or (len(out) < len(wanted) and skipped):
            raise _Retry  # seeked past the real end, or skipped the real last frame
        if len(out) < len(wanted):
            if strict:
                raise VideoDecodeError(path, f"frame {wanted[-1]} is past the last decodable "
                                             f"frame {index} (the file may be truncated)")
            out += [to_rgb(last)] * (len(wanted) - len(out))
    return np.stack(out)


def _rgb_converter() -> Callable[[av.VideoFrame], np.ndarray]:
    """Frame -> (H, W, 3) uint8 RGB through one reformatter for the whole video.

    `frame.to_ndarray(format="rgb24")` builds a new scaler context for every frame; reusing one
    gives identical pixels and is 2-3x faster on small frames, where that set-up dominates.
    """
    reformatter = av.video.reformatter.VideoReformatter()
    return lambda frame: reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def _pyav_read_all(path: Path) -> np.ndarray:
    return np.stack(list(iter_frames(path)))


# ---------------------------------------------------------------------------------------------
# Optional backends: imported lazily, each behind the same three functions.


def _torchcodec_decoder(path: Path | bytes, device: str = "cpu"):
    try:
        from torchcodec.decoders import VideoDecoder
    except (ImportError, RuntimeError, OSError) as e:  # RuntimeError: FFmpeg libraries missing
        from distinit.optional import MissingDependency

        raise MissingDependency(
            "the torchcodec backend is unavailable: install it with pip install "
            "'distinit[torchcodec]' and FFmpeg's shared libraries (apt-get install ffmpeg), or "
            f"use backend 'pyav' ({str(e).splitlines()[0]})") from None
    # "exact" scans the packets once, so frame counts and seeks are right even where the
    # header lies; one FFmpeg thread because data-loader workers already use every core.
    try:
        return VideoDecoder(path if isinstance(path, bytes) else str(path),
                            dimension_order="NHWC", seek_mode="exact", num_ffmpeg_threads=1,
                            device=device)
    except ValueError as e:  # raised where the file has no video stream
        raise VideoDecodeError(path, f"no usable video stream ({_first_line(e)})") from None


def _torchcodec_probe(path: Path, device: str = "cpu") -> VideoInfo:
    meta = _torchcodec_decoder(path, device).metadata
    _clamp(path, [0], meta.num_frames, strict=True)  # raises if there are no frames
    return VideoInfo(num_frames=meta.num_frames, fps=float(meta.average_fps or 0.0),
                     height=meta.height, width=meta.width)


def _torchcodec_read(path: Path, wanted: list[int], strict: bool,
                     device: str = "cpu") -> np.ndarray:
    decoder = _torchcodec_decoder(path, device)
    indices = _clamp(path, wanted, decoder.metadata.num_frames or 0, strict)
    return decoder.get_frames_at(indices).data.cpu().numpy()  # from the GPU with device=cuda


def _torchcodec_read_all(path: Path, device: str = "cpu") -> np.ndarray:
    num_frames = _torchcodec_decoder(path, device).metadata.num_frames or 0
    return _torchcodec_read(path, list(range(num_frames)) or [0], strict=True, device=device)


def _torchcodec_on(device: str) -> Backend:
    return Backend(functools.partial(_torchcodec_probe, device=device),
                   functools.partial(_torchcodec_read, device=device),
                   functools.partial(_torchcodec_read_all, device=device))


@functools.cache
def _torchcodec_cuda_missing() -> str:
    """Why torchcodec cannot open a video on the GPU ('' when it can): a CPU build of torchcodec
    says so only when a decoder is made, so one is made on a tiny video encoded in memory."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    try:
        _torchcodec_decoder(buffer.getvalue(), "cuda")
    except RuntimeError as e:  # "Unsupported device: cuda" from a CPU build
        return _first_line(e)
    return ""


def _decord_reader(path: Path):
    from distinit.optional import require

    decord = require("decord", "decord")
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except decord.DECORDError as e:  # not a RuntimeError
        raise VideoDecodeError(path, _first_line(e)) from None


def _decord_batch(path: Path, reader, wanted: list[int], strict: bool) -> np.ndarray:
    import decord

    indices = _clamp(path, wanted, len(reader), strict)
    try:
        return reader.get_batch(indices).asnumpy()
    except decord.DECORDError as e:
        raise VideoDecodeError(path, _first_line(e)) from None


def _decord_probe(path: Path) -> VideoInfo:
    reader = _decord_reader(path)
    _, height, width, _ = _decord_batch(path, reader, [0], strict=True).shape
    return VideoInfo(num_frames=len(reader), fps=float(reader.get_avg_fps()), height=height,
                     width=width)


def _decord_read(path: Path, wanted: list[int], strict: bool) -> np.ndarray:
    return _decord_batch(path, _decord_reader(path), wanted, strict)


def _decord_read_all(path: Path) -> np.ndarray:
    reader = _decord_reader(path)
    return _decord_batch(path, reader, list(range(len(reader))) or [0], strict=True)


def _clamp(path: Path, wanted: list[int], num_frames: int, strict: bool) -> list[int]:
    if num_frames == 0:
        raise VideoDecodeError(path, "the video stream has no frames")
    if strict and wanted[-1] >= num_frames:
        raise VideoDecodeError(path, f"frame {wanted[-1]} is past the last frame {num_frames - 1}")
    return [min(i, num_frames - 1) for i in wanted]


BACKENDS: dict[str, Backend] = {
    "pyav": Backend(_pyav_probe, _pyav_read, _pyav_read_all),
    "torchcodec": Backend(_torchcodec_probe, _torchcodec_read, _torchcodec_read_all),
    "decord": Backend(_decord_probe, _decord_read, _decord_read_all),
}


# ---------------------------------------------------------------------------------------------
# Frame folders: read the same way whatever the backend.


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _folder_frames(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                    and not p.name.startswith(".")), key=_natural_key)
    if not files:
        raise VideoDecodeError(folder, "the frame folder has no .jpg/.jpeg/.png images")
    return files


def _load_image(file: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:  # the error names the folder: the video
        raise VideoDecodeError(file.parent, f"{file.name} is not a readable image ({e})") from None


def _folder_probe(folder: Path) -> VideoInfo:
    from PIL import Image, UnidentifiedImageError

    files = _folder_frames(folder)
    try:
        with Image.open(files[0]) as image:  # reads the header only
            width, height = image.size
    except (UnidentifiedImageError, OSError) as e:
        raise VideoDecodeError(folder, f"{files[0].name} is not a readable image ({e})") from None
    fps, fps_file = DEFAULT_FOLDER_FPS, folder / FPS_FILE
    if fps_file.exists():
        try:
            fps = float(fps_file.read_text())
        except ValueError:
            raise VideoDecodeError(folder, f"{FPS_FILE} does not hold a number") from None
    return VideoInfo(num_frames=len(files), fps=fps, height=height, width=width)


def _stack_same_size(folder: Path, files: list[Path]) -> np.ndarray:
    frames = [_load_image(f) for f in files]
    for file, frame in zip(files, frames):
        if frame.shape != frames[0].shape:
            raise VideoDecodeError(folder, f"{file.name} is {frame.shape[1]}x{frame.shape[0]} "
                                           f"but {files[0].name} is {frames[0].shape[1]}x"
                                           f"{frames[0].shape[0]}")
    return np.stack(frames)


def _folder_read(folder: Path, wanted: list[int], strict: bool) -> np.ndarray:
    files = _folder_frames(folder)
    return _stack_same_size(folder, [files[i] for i in _clamp(folder, wanted, len(files), strict)])


FRAME_FOLDER = Backend(_folder_probe, _folder_read,
                       lambda folder: _stack_same_size(folder, _folder_frames(folder)))


def _backend_for(path: Path, backend: str, device: str = "cpu") -> Backend:
    if backend not in BACKENDS:
        raise UserError(f"unknown video backend {backend!r}; choose one of {sorted(BACKENDS)}")
    if path.is_dir():
        return FRAME_FOLDER
    _check_file(path)
    if device != "cpu":
        if backend != "torchcodec":
            raise UserError(f"only the torchcodec backend decodes on {device}, not {backend!r}")
        return _torchcodec_on(device)
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
        raise VideoDecodeError(path, _first_line(e)) from None


def _first_line(error: Exception) -> str:
    """The message of a C++ library's error without its source location."""
    message = (str(error).strip() or type(error).__name__).splitlines()[0]
    message = re.sub(r"^.*\.(cpp|cc):\d+[,:]? *", "", message)
    return message.split("ERROR ", 1)[-1]


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
    for folder, dirs, files in os.walk(root):
        # Hidden names are skipped: reencode writes its unfinished outputs under them.
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files = [f for f in files if not f.startswith(".")]
        if _is_frame_folder(dirs, files, suffixes):
            videos.append(Path(folder))
        else:
            videos += [Path(folder) / f for f in files if Path(f).suffix.lower() in suffixes]
    if not videos:
        raise UserError(f"no videos ({', '.join(suffixes)} files or frame folders) found under "
                        f"{root}; check the path or set the extensions to look for with "
                        f"{extensions_option}")
    return sorted(videos)


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
