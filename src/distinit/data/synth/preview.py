"""A picture of a generated world: object stills, scene stills and frames of action videos.

Everything is read back from the files on disk (videos decoded, not re-rendered), so the
picture shows what the models will see. Tiles are upscaled with nearest neighbour so that
32 px frames stay crisp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from distinit.data.synth.world import World
from distinit.data.video.io import read_all_frames

CAPTION = 12  # pixels under each tile for its label
GAP = 4
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def _first_png(folder: Path) -> np.ndarray:
    return np.asarray(Image.open(min(folder.glob("*.png"))).convert("RGB"))


def _pick_videos(world: World, count: int) -> list[tuple[str, Path]]:
    # One video per motion, cycling through the groups (and through each action's videos,
    # for a variety of objects), so every motion and group shows.
    picks = []
    for i, motion in enumerate(world.motions[:count]):
        action = f"{motion}_{world.groups[i % len(world.groups)]}"
        videos = sorted((world.actions_videos / action).glob("*.mp4"))
        picks.append((action, videos[i % len(videos)]))
    return picks


def write_preview(world: World, path: str | Path, n_videos: int = 5, n_frames: int = 16,
                  scale: int | None = None) -> Path:
    """Write a PNG grid of sample stills and video frames of `world` to `path`."""
    scale = scale or max(1, -(-96 // world.frame_size))  # tiles of at least 96 px, for the labels
    tile = world.frame_size * scale
    rows: list[tuple[str, list[tuple[np.ndarray, str]]]] = [
        ("object stills (ImageNet's role), one per class; the group is what actions see",
         [(_first_png(world.objects_test / c), f"{c}/{g}")
          for c, g in zip(world.object_classes, world.object_groups)]),
        ("scene stills (Places' role)",
         [(_first_png(world.scenes_test / s), s) for s in world.scene_classes]),
    ]
    for action, video in _pick_videos(world, n_videos):
        frames = read_all_frames(video)
        step = max(1, len(frames) // n_frames)
        rows.append((f"action video {video.name} (HMDB's role): {action}",
                     [(f, f"t={t * step}") for t, f in enumerate(frames[::step][:n_frames])]))

    font = ImageFont.load_default()
    columns = max(len(tiles) for _, tiles in rows)
    width = GAP + columns * (tile + GAP)
    row_height = CAPTION + tile + CAPTION + GAP
    canvas = Image.new("RGB", (width, GAP + len(rows) * row_height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for r, (title, tiles) in enumerate(rows):
        top = GAP + r * row_height
        draw.text((GAP, top), title, fill=INK, font=font)
        for c, (image, label) in enumerate(tiles):
            left = GAP + c * (tile + GAP)
            canvas.paste(Image.fromarray(image).resize((tile, tile), Image.NEAREST), (left, top + CAPTION))
            draw.text((left, top + CAPTION + tile), label, fill=INK, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
