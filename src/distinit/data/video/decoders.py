"""How each library turns a video file into frames: PyAV (the default), torchcodec (also on the
GPU) and decord, each behind the same three functions (`Backend`). `distinit.data.video.io` is the
interface the rest of the code reads videos through; frame folders are in `frame_folders`.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from distinit.errors import UserError


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


def pyav_frames(path: Path) -> Iterator[np.ndarray]:
    """Yield the frames of a video file one at a time, (H, W, 3) uint8 RGB."""
    with _open_pyav(path) as container:
        count, to_rgb = 0, _rgb_converter()
        for frame in container.decode(_video_stream(container, path)):
            count += 1
            yield to_rgb(frame)
    if count == 0:
        raise VideoDecodeError(path, "no frame could be decoded")


def _pyav_read_all(path: Path) -> np.ndarray:
    return np.stack(list(pyav_frames(path)))


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
        raise VideoDecodeError(path, f"no usable video stream ({first_line(e)})") from None


def _torchcodec_probe(path: Path, device: str = "cpu") -> VideoInfo:
    meta = _torchcodec_decoder(path, device).metadata
    clamp_indices(path, [0], meta.num_frames, strict=True)  # raises if there are no frames
    return VideoInfo(num_frames=meta.num_frames, fps=float(meta.average_fps or 0.0),
                     height=meta.height, width=meta.width)


def _torchcodec_read(path: Path, wanted: list[int], strict: bool,
                     device: str = "cpu") -> np.ndarray:
    decoder = _torchcodec_decoder(path, device)
    indices = clamp_indices(path, wanted, decoder.metadata.num_frames or 0, strict)
    return decoder.get_frames_at(indices).data.cpu().numpy()  # from the GPU with device=cuda


def _torchcodec_read_all(path: Path, device: str = "cpu") -> np.ndarray:
    num_frames = _torchcodec_decoder(path, device).metadata.num_frames or 0
    return _torchcodec_read(path, list(range(num_frames)) or [0], strict=True, device=device)


def torchcodec_on(device: str) -> Backend:
    return Backend(functools.partial(_torchcodec_probe, device=device),
                   functools.partial(_torchcodec_read, device=device),
                   functools.partial(_torchcodec_read_all, device=device))


@functools.cache
def torchcodec_cuda_missing() -> str:
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
        return first_line(e)
    return ""


def _decord_reader(path: Path):
    from distinit.optional import require

    decord = require("decord", "decord")
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except decord.DECORDError as e:  # not a RuntimeError
        raise VideoDecodeError(path, first_line(e)) from None


def _decord_batch(path: Path, reader, wanted: list[int], strict: bool) -> np.ndarray:
    import decord

    indices = clamp_indices(path, wanted, len(reader), strict)
    try:
        return reader.get_batch(indices).asnumpy()
    except decord.DECORDError as e:
        raise VideoDecodeError(path, first_line(e)) from None


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


def clamp_indices(path: Path, wanted: list[int], num_frames: int, strict: bool) -> list[int]:
    """`wanted` with indices past the last frame read as the last frame (an error if `strict`)."""
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


def first_line(error: Exception) -> str:
    """The message of a C++ library's error without its source location."""
    message = (str(error).strip() or type(error).__name__).splitlines()[0]
    message = re.sub(r"^.*\.(cpp|cc):\d+[,:]? *", "", message)
    return message.split("ERROR ", 1)[-1]

