"""A stand-in for PyAV built on OpenCV, for `scripts/gpu_check.py` only.

distinit reads and writes every video through PyAV (`import av` at the top of
`distinit.data.video.decoders` and `distinit.data.video.io`) and has no OpenCV backend. A GPU machine
without a PyAV wheel still has OpenCV, so the check puts this folder on PYTHONPATH (only when
the real PyAV does not import, or with `--video-io opencv`): the project's own PyAV code then
runs unchanged on top of `cv2.VideoCapture` and `cv2.VideoWriter`.

Only what distinit calls is here. Writing: `cv2.VideoWriter` with the mp4v (MPEG-4 Part 2)
codec whatever codec is asked for (libx264 is not in OpenCV's wheels), MJPG for .avi; codec
options, pixel formats and keyframe intervals are ignored. Reading: every frame is one packet
whose pts is its index (time base 1/fps, start 0); seeks do nothing, so a read decodes from the
first frame, which is exact and costs at most one pass over these short videos. Decoding speed
measured through this module is OpenCV's, not PyAV's.
"""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

__version__ = f"0.0-opencv-shim (cv2 {cv2.__version__})"
OPENCV_SHIM = True


class FFmpegError(Exception):
    def __init__(self, message: str = "", *args):
        super().__init__(message, *args)
        self.strerror = message


class InvalidDataError(FFmpegError, ValueError):
    pass


class UnknownCodecError(FFmpegError, ValueError):
    pass


# --------------------------------------------------------------------------------------------
# Frames and packets.


class VideoFrame:
    """One decoded frame: RGB (H, W, 3) uint8 and its pts."""

    def __init__(self, rgb: np.ndarray, pts: int | None = None):
        self._rgb, self.pts = rgb, pts
        self.height, self.width = rgb.shape[:2]

    @classmethod
    def from_ndarray(cls, array: np.ndarray, format: str = "rgb24") -> VideoFrame:
        if format != "rgb24":
            raise FFmpegError(f"the OpenCV shim takes rgb24 frames only, not {format}")
        return cls(np.ascontiguousarray(array, dtype=np.uint8))

    def to_ndarray(self, format: str = "rgb24", **_) -> np.ndarray:
        if format != "rgb24":
            raise FFmpegError(f"the OpenCV shim gives rgb24 frames only, not {format}")
        return self._rgb

    def reformat(self, format: str = "rgb24", **_) -> VideoFrame:
        self.to_ndarray(format)
        return self


class VideoReformatter:
    def reformat(self, frame: VideoFrame, format: str = "rgb24", **_) -> VideoFrame:
        return frame.reformat(format)


class Packet:
    """One frame's worth of the stream; `decode()` must be called before the next packet."""

    def __init__(self, container: InputContainer, pts: int | None, serial: int):
        self._container, self.pts, self._serial = container, pts, serial
        self.size = 0 if pts is None else 1

    def decode(self) -> list[VideoFrame]:
        if self.pts is None:
            return []
        return [self._container._retrieve(self._serial, self.pts)]


# --------------------------------------------------------------------------------------------
# Reading.


class _Codec:
    intra_only = False
    name = "opencv"


class _CodecContext:
    def __init__(self, width: int = 0, height: int = 0):
        self.width, self.height = width, height
        self.thread_count, self.gop_size, self.codec = 0, 12, _Codec()


class VideoStream:
    type = "video"

    def __init__(self, fps: Fraction, frames: int, width: int, height: int):
        self.average_rate = self.guessed_rate = self.base_rate = fps
        self.time_base = 1 / fps if fps else Fraction(1, 25)
        self.start_time, self.frames = 0, frames
        self.codec_context = _CodecContext(width, height)
        self.width, self.height = width, height


class InputContainer:
    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise FFmpegError(f"No such file or directory: '{path}'")
        self._path = path
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            raise InvalidDataError("Invalid data found when processing input (OpenCV cannot "
                                   "open it)")
        rate = self._cap.get(cv2.CAP_PROP_FPS) or 0.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        fps = Fraction(rate).limit_denominator(1001) if rate > 0 else Fraction(0)
        video = [VideoStream(fps, max(count, 0), width, height)] if width and height else []
        self.streams = SimpleNamespace(video=video, audio=[])
        self._serial = 0  # frames grabbed so far: a packet decodes only right after its grab

    def seek(self, offset: int, **_) -> None:
        """Reads start again from the first frame (see the module's docstring)."""
        if self._serial == 0:
            return
        self._cap.release()
        self._cap = cv2.VideoCapture(self._path)
        self._serial = 0

    def demux(self, stream: VideoStream | None = None):
        index = 0
        while self._cap.grab():
            self._serial += 1
            yield Packet(self, index, self._serial)
            index += 1
        yield Packet(self, None, self._serial)  # the flush packet PyAV ends with

    def decode(self, stream: VideoStream | None = None):
        for packet in self.demux(stream):
            yield from packet.decode()

    def _retrieve(self, serial: int, pts: int) -> VideoFrame:
        if serial != self._serial:
            raise FFmpegError("OpenCV shim: a packet was decoded after the next one was read")
        ok, bgr = self._cap.retrieve()
        if not ok or bgr is None:
            raise InvalidDataError(f"OpenCV could not decode frame {pts} of {self._path}")
        return VideoFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), pts)

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> InputContainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Writing.


_FOURCC = {".avi": "MJPG"}


class _OutputStream:
    def __init__(self, container: OutputContainer, rate):
        self._container = container
        self.rate = Fraction(rate or 25).limit_denominator(1001)
        self.width = self.height = 0
        self.pix_fmt, self.options = "yuv420p", {}
        self.codec_context = _CodecContext()

    def encode(self, frame: VideoFrame | None = None) -> list:
        if frame is not None:
            self._container._write(self, frame.to_ndarray())
        return []


class OutputContainer:
    def __init__(self, path: str):
        self._path, self._writer, self._stream = path, None, None

    def add_stream(self, codec: str = "", rate=25, **_) -> _OutputStream:
        self._stream = _OutputStream(self, rate)
        return self._stream

    def start_encoding(self) -> None:
        pass

    def _write(self, stream: _OutputStream, rgb: np.ndarray) -> None:
        if self._writer is None:
            h, w = rgb.shape[:2]
            fourcc = _FOURCC.get(Path(self._path).suffix.lower(), "mp4v")
            self._writer = cv2.VideoWriter(self._path, cv2.VideoWriter_fourcc(*fourcc),
                                           float(stream.rate), (stream.width or w,
                                                                stream.height or h))
            if not self._writer.isOpened():
                raise FFmpegError(f"OpenCV cannot write {self._path} with the {fourcc} codec")
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def mux(self, packet) -> None:
        pass

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> OutputContainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open(file, mode: str = "r", format: str | None = None, **_):  # PyAV's name
    if isinstance(file, io.IOBase):
        raise FFmpegError("the OpenCV shim reads and writes files only, not in-memory buffers")
    path = os.fspath(file)
    if mode == "w":
        return OutputContainer(path)
    return InputContainer(path)


class Codec:
    def __init__(self, name: str, mode: str = "r"):
        if mode == "w" and name not in ("mpeg4", "mjpeg", "libx264", "h264"):
            raise UnknownCodecError(name)
        self.name = name


container = SimpleNamespace(InputContainer=InputContainer, OutputContainer=OutputContainer)
video = SimpleNamespace(reformatter=SimpleNamespace(VideoReformatter=VideoReformatter),
                        frame=SimpleNamespace(VideoFrame=VideoFrame))
codec = SimpleNamespace(Codec=Codec, codec=SimpleNamespace(UnknownCodecError=UnknownCodecError))
error = SimpleNamespace(FFmpegError=FFmpegError, InvalidDataError=InvalidDataError)
