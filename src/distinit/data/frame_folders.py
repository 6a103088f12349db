"""Frame folders: a directory of JPEG/PNG frames (sorted by name, numbers compared as numbers)
with no subdirectories, read as a video the same way whatever the backend."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from distinit.data.decoders import Backend, VideoDecodeError, VideoInfo, clamp_indices

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Frame folders carry no frame rate; `reencode --frames` writes the source's into this file.
FPS_FILE = "fps.txt"
DEFAULT_FOLDER_FPS = 30.0


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                    and not p.name.startswith(".")), key=_natural_key)
    if not files:
        raise VideoDecodeError(folder, "the frame folder has no .jpg/.jpeg/.png images")
    return files


def load_frame(file: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:  # the error names the folder: the video
        raise VideoDecodeError(file.parent, f"{file.name} is not a readable image ({e})") from None


def _folder_probe(folder: Path) -> VideoInfo:
    from PIL import Image, UnidentifiedImageError

    files = frame_files(folder)
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
    frames = [load_frame(f) for f in files]
    for file, frame in zip(files, frames):
        if frame.shape != frames[0].shape:
            raise VideoDecodeError(folder, f"{file.name} is {frame.shape[1]}x{frame.shape[0]} "
                                           f"but {files[0].name} is {frames[0].shape[1]}x"
                                           f"{frames[0].shape[0]}")
    return np.stack(frames)


def _folder_read(folder: Path, wanted: list[int], strict: bool) -> np.ndarray:
    files = frame_files(folder)
    return _stack_same_size(folder, [files[i] for i in clamp_indices(folder, wanted, len(files), strict)])


FRAME_FOLDER = Backend(_folder_probe, _folder_read,
                       lambda folder: _stack_same_size(folder, frame_files(folder)))
