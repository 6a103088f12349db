"""Frame folders: a directory of JPEG/PNG frames with no subdirectories, read as a video the same
way whatever the backend. Which files are the frames: `frame_files`, as `data.frame_template`
says (threaded here through `folder_backend`, never a global)."""

from __future__ import annotations

import functools
import re
import string
from pathlib import Path

import numpy as np

from distinit.config_rules import ConfigError
from distinit.data.video.decoders import Backend, VideoDecodeError, VideoInfo, clamp_indices
from distinit.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Frame folders carry no frame rate; `reencode --frames` writes the source's into this file.
FPS_FILE = "fps.txt"
DEFAULT_FOLDER_FPS = 30.0


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


# Optical flow that extraction tools store beside the RGB frames: MMAction2's rawframes
# (flow_x_00001.jpg, flow_y_00001.jpg), denseflow's x_00001.jpg, y_00001.jpg.
FLOW_PREFIXES = ("flow_", "x_", "y_")
TEMPLATE_EXAMPLE = "img_{:05d}.jpg"


class FrameTemplateError(UserError):
    """No file of a frame folder matches data.frame_template: a setting to fix, not a bad
    video to skip."""


def check_frame_template(template: str) -> None:
    """One ConfigError line unless `template` is a frame's file name with one integer field."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        problem = ("it needs one field, the frame's number" if len(fields) != 1 else
                   "its field must be positional ({} or {:05d}), not named" if fields[0] not in ("", "0")
                   else "it names a file, without folders" if "/" in template or "\\" in template
                   else "")
        if not problem:
            template.format(1)
    except (ValueError, IndexError, KeyError, AttributeError, TypeError) as e:
        problem = str(e)
    if problem:
        raise ConfigError(f"data.frame_template {template!r}: {problem}; give the frames' file "
                          f"name with one integer field, e.g. {TEMPLATE_EXAMPLE!r}")


@functools.lru_cache(maxsize=16)
def _template_pattern(template: str) -> re.Pattern:
    # The literal parts as they are, the field as anything: a match is then checked by
    # formatting its number again, so "img_{:05d}.jpg" takes img_00001.jpg but not img_1.jpg.
    return re.compile("".join(re.escape(literal) + ("(.+)" if name is not None else "")
                              for literal, name, _, _ in string.Formatter().parse(template)))


def _numbered(files: list[Path], template: str) -> list[tuple[int, Path]]:
    pattern, out = _template_pattern(template), []
    for file in files:
        match = pattern.fullmatch(file.name)
        if match:
            try:
                number = int(match.group(1))
            except ValueError:
                continue
            if template.format(number) == file.name:
                out.append((number, file))
    return out


def frame_files(folder: Path, template: str = "") -> list[Path]:
    """The frames of a frame folder, in order.

    With `template` (data.frame_template, e.g. "img_{:05d}.jpg"): exactly the files it names,
    ordered by their number; none is a FrameTemplateError. Without: every .jpg/.jpeg/.png image,
    sorted by name (numbers compared as numbers), except optical flow stored in the same folder
    (MMAction2's rawframes): while other images are there, files whose names start with
    flow_ (flow_x_, flow_y_), x_ or y_ are flow, not frames, and are left out.
    """
    images = [p for p in folder.iterdir()
              if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    if not images:
        raise VideoDecodeError(folder, "the frame folder has no .jpg/.jpeg/.png images")
    if template:
        numbered = _numbered(images, template)
        if not numbered:
            example = min(images, key=_natural_key).name
            raise FrameTemplateError(
                f"{folder}: no frames match data.frame_template {template!r} (found e.g. "
                f"{example!r}); set data.frame_template to the frames' names")
        return [file for _, file in sorted(numbered)]
    rgb = [p for p in images if not p.name.lower().startswith(FLOW_PREFIXES)]
    return sorted(rgb or images, key=_natural_key)


def load_frame(file: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:  # the error names the folder: the video
        raise VideoDecodeError(file.parent, f"{file.name} is not a readable image ({e})") from None


def _folder_probe(folder: Path, template: str = "") -> VideoInfo:
    from PIL import Image, UnidentifiedImageError

    files = frame_files(folder, template)
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


def _folder_read(folder: Path, wanted: list[int], strict: bool, template: str = "") -> np.ndarray:
    files = frame_files(folder, template)
    return _stack_same_size(folder, [files[i] for i in clamp_indices(folder, wanted, len(files), strict)])


def _folder_read_all(folder: Path, template: str = "") -> np.ndarray:
    return _stack_same_size(folder, frame_files(folder, template))


@functools.lru_cache(maxsize=16)
def folder_backend(template: str = "") -> Backend:
    """The frame-folder backend whose frames are `frame_files(folder, template)`."""
    if template:
        check_frame_template(template)
    return Backend(functools.partial(_folder_probe, template=template),
                   functools.partial(_folder_read, template=template),
                   functools.partial(_folder_read_all, template=template))


FRAME_FOLDER = folder_backend()
