"""Shared fixtures: tiny real encoded videos and frame folders written per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from distinit.data.synth import generate_world
from distinit.data.video.io import write_video
from distinit.models.image_resnet import build_image_model
from distinit.models.teachers import teacher_checkpoint

# container -> default codec; (container, codec) pairs every decoding test covers
DEFAULT_CODECS = {"mp4": "libx264", "avi": "mjpeg", "webm": "libvpx-vp9", "mkv": "libx264",
                  "ts": "libx264", "mov": "libx264"}


def pattern_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(T, H, W, 3) uint8 frames a lossy codec keeps apart: the top half's gray level is 7*t,
    the bottom half a color gradient with a white block moving right by 2 pixels a frame."""
    t = np.arange(num_frames)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[:, :height // 2] = (7 * t % 256).astype(np.uint8)[:, None, None, None]
    frames[:, height // 2:, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)
    frames[:, height // 2:, :, 2] = np.linspace(255, 0, width, dtype=np.uint8)
    for i in t:
        x = 2 * i % (width - 8)
        frames[i, height // 2 + 4:height // 2 + 12, x:x + 8] = 255
    return frames


@pytest.fixture
def video_frames() -> Callable[..., np.ndarray]:
    """The frames `make_video` encodes: video_frames(num_frames, height, width)."""
    return pattern_frames


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a real encoded video (or a PNG frame folder with container="frames").

    make_video(name="video", container="mp4", codec=None (the container's usual one),
    num_frames=24, height=48, width=64, fps=25, gop=None, folder=tmp_path) -> Path
    """

    def make(name: str = "video", container: str = "mp4", codec: str | None = None,
             num_frames: int = 24, height: int = 48, width: int = 64, fps: float = 25,
             gop: int | None = None, folder: Path | None = None) -> Path:
        folder = Path(folder or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        frames = pattern_frames(num_frames, height, width)
        if container == "frames":
            path = folder / name
            path.mkdir()
            for i, frame in enumerate(frames):
                Image.fromarray(frame).save(path / f"frame_{i + 1}.png")  # unpadded on purpose
            return path
        path = folder / f"{name}.{container}"
        write_video(path, frames, fps=fps, codec=codec or DEFAULT_CODECS[container], gop=gop)
        return path

    return make


@pytest.fixture
def make_bad_video(tmp_path: Path, make_video) -> Callable[..., Path]:
    """Factory writing a broken video: make_bad_video(kind, folder=tmp_path) -> Path, where kind
    is empty, truncated_mp4, random_bytes, text, audio_only, zero_frames or missing."""

    def make(kind: str, folder: Path | None = None) -> Path:
        folder = Path(folder or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{kind}.mp4"
        if kind == "empty":
            path.touch()
        elif kind == "truncated_mp4":
            data = make_video(name=f"{kind}_whole", num_frames=30, folder=folder).read_bytes()
            path.write_bytes(data[:len(data) // 2])  # mp4 keeps its index at the end
            (folder / f"{kind}_whole.mp4").unlink()
        elif kind == "random_bytes":
            path.write_bytes(np.random.default_rng(0).bytes(4096))
        elif kind == "text":
            path.write_text("this is a text file, not a video\n" * 20)
        elif kind == "audio_only":
            with av.open(str(path), "w") as container:
                stream = container.add_stream("aac", rate=16000)
                for _ in range(8):
                    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32),
                                                       format="fltp", layout="mono")
                    frame.sample_rate = 16000
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        elif kind == "zero_frames":  # a video stream with no frames: header only
            path = folder / f"{kind}.avi"
            with av.open(str(path), "w") as container:
                stream = container.add_stream("mjpeg", rate=25)
                stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
                container.start_encoding()
        elif kind != "missing":
            raise ValueError(f"unknown kind of bad video {kind!r}")
        return path

    return make


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The tiny synthetic world: stills, an unlabeled corpus and an HMDB-format action set."""
    return generate_world(tmp_path_factory.mktemp("world"), seed=0, size="tiny")


@pytest.fixture(scope="session")
def teacher_file(world, tmp_path_factory) -> Path:
    """An untrained tiny image teacher for the world's object classes, in our checkpoint format."""
    torch.manual_seed(0)
    net = build_image_model("resnet_tiny", num_classes=len(world.object_classes), width=8)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(teacher_checkpoint(net, "resnet_tiny", len(world.object_classes),
                                  arch_kwargs={"width": 8}, mean=[0.5] * 3, std=[0.25] * 3), path)
    return path


@pytest.fixture(scope="session")
def labeled(world) -> list[str]:
    """Overrides that point finetune/eval at the world's action set."""
    return ["data.format=hmdb51", f"data.video_root={world.actions_videos}",
            f"data.split_dir={world.actions_splits}"]
