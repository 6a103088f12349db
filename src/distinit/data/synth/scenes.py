"""Scene backgrounds of the synthetic world (the Places analog), drawn procedurally.

Each scene is a function `(rng, height, width, unit) -> (H, W, 3) float32 in 0..1` where
`unit` is the pixel size of one texture unit (frame_size / 32), so a 64 px world shows the
same scenes as a 32 px one at twice the detail. Textures are of moderate contrast: strong
enough to be told apart, weak enough not to hide the objects in front of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from distinit.data.synth.objects import hsv_to_rgb

Scene = Callable[[np.random.Generator, int, int, float], np.ndarray]


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell_y: float, cell_x: float) -> np.ndarray:
    """Value noise: a random grid, one value per cell, interpolated smoothly; (h, w) in -1..1."""
    gh, gw = int(np.ceil(h / cell_y)) + 2, int(np.ceil(w / cell_x)) + 2
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    y = np.arange(h) / cell_y + rng.uniform(0, 1)
    x = np.arange(w) / cell_x + rng.uniform(0, 1)
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = y - y0, x - x0
    fy, fx = (fy * fy * (3 - 2 * fy))[:, None], (fx * fx * (3 - 2 * fx))[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _colour(rng: np.random.Generator, hue: float, sat: float, val: float) -> np.ndarray:
    # Wide jitter: scenes of one class differ in light and tint, and neighbours overlap.
    h = (hue + rng.uniform(-0.05, 0.05)) % 1.0
    s = float(np.clip(sat + rng.uniform(-0.15, 0.15), 0, 1))
    v = float(np.clip(val + rng.uniform(-0.15, 0.15), 0, 1))
    return np.array(hsv_to_rgb(h, s, v), dtype=np.float32)


def _blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a * (1 - t[..., None]) + b * t[..., None]


def _sky(rng, h, w, unit):
    top, bottom = _colour(rng, 0.58, 0.55, 0.85), _colour(rng, 0.56, 0.25, 0.95)
    ramp = np.broadcast_to(np.linspace(0, 1, h, dtype=np.float32)[:, None], (h, w))
    img = _blend(top, bottom, ramp)
    clouds = np.clip(smooth_noise(rng, h, w, 6 * unit, 12 * unit) * 2 - 0.3, 0, 1)
    return _blend(img, np.full(3, 0.97, np.float32), 0.7 * clouds)


def _grass(rng, h, w, unit):
    dark, light = _colour(rng, 0.28, 0.6, 0.4), _colour(rng, 0.25, 0.55, 0.7)
    blades = smooth_noise(rng, h, w, 3 * unit, 0.8 * unit)
    patches = smooth_noise(rng, h, w, 10 * unit, 10 * unit)
    return _blend(dark, light, np.clip(0.5 + 0.3 * blades + 0.2 * patches, 0, 1))


def _sand(rng, h, w, unit):
    dark, light = _colour(rng, 0.11, 0.4, 0.7), _colour(rng, 0.12, 0.3, 0.9)
    y = np.arange(h, dtype=np.float32)[:, None] / unit
    dunes = np.sin(y / rng.uniform(2.0, 3.5) + 2 * smooth_noise(rng, h, w, 8 * unit, 8 * unit))
    grain = rng.uniform(-1, 1, (h, w)).astype(np.float32)
    return _blend(dark, light, np.clip(0.5 + 0.3 * dunes + 0.12 * grain, 0, 1))


def _water(rng, h, w, unit):
    deep, light = _colour(rng, 0.53, 0.7, 0.45), _colour(rng, 0.5, 0.45, 0.8)
    y = np.arange(h, dtype=np.float32)[:, None] / unit
    warp = 3 * smooth_noise(rng, h, w, 6 * unit, 10 * unit)
    waves = np.sin(y * rng.uniform(1.2, 1.8) + warp)
    return _blend(deep, light, np.clip(0.5 + 0.35 * waves, 0, 1))


def _brick(rng, h, w, unit):
    brick, mortar = _colour(rng, 0.02, 0.55, 0.6), _colour(rng, 0.08, 0.15, 0.8)
    bh, bw = rng.uniform(3, 4) * unit, rng.uniform(6, 8) * unit
    y = np.arange(h, dtype=np.float32)[:, None] + rng.uniform(0, bh)
    x = np.arange(w, dtype=np.float32)[None, :] + rng.uniform(0, bw)
    row = np.floor(y / bh)
    xs = x + (row % 2) * bw / 2
    joint = ((y % bh) < 0.9 * unit) | ((xs % bw) < 0.9 * unit)
    shade = 0.15 * smooth_noise(rng, h, w, bh, bw)
    img = _blend(brick, mortar, joint.astype(np.float32))
    return np.clip(img * (1 + shade[..., None]), 0, 1)


def _forest(rng, h, w, unit):
    leaves, trunk = _colour(rng, 0.33, 0.55, 0.45), _colour(rng, 0.07, 0.5, 0.35)
    canopy = smooth_noise(rng, h, w, 2.5 * unit, 2.5 * unit)
    img = _blend(leaves * 0.8, leaves * 1.25, np.clip(0.5 + 0.4 * canopy, 0, 1))
    x = np.arange(w, dtype=np.float32) / unit
    spacing, width = rng.uniform(7, 10), rng.uniform(1.5, 2.5)
    trunks = ((x + rng.uniform(0, spacing)) % spacing < width).astype(np.float32)
    return _blend(img, trunk, np.broadcast_to(0.85 * trunks[None, :], (h, w)))


def _city(rng, h, w, unit):
    sky, wall = _colour(rng, 0.6, 0.15, 0.85), _colour(rng, 0.6, 0.08, 0.5)
    x = np.arange(w, dtype=np.float32)
    bw = rng.uniform(6, 10) * unit
    building = np.floor((x + rng.uniform(0, bw)) / bw)
    tops = h * (0.15 + 0.4 * (np.sin(building * 12.9898 + rng.uniform(0, 6)) * 0.5 + 0.5))
    y = np.arange(h, dtype=np.float32)[:, None]
    inside = y > tops[None, :]
    img = _blend(sky, wall, inside.astype(np.float32))
    wy, wx = (y / unit) % 3 < 1.2, (x[None, :] / unit) % 3 < 1.2
    windows = inside & wy & wx
    return _blend(img, np.array([0.9, 0.85, 0.55], np.float32), 0.5 * windows.astype(np.float32))


def _tiles(rng, h, w, unit):
    a, b = _colour(rng, 0.1, 0.15, 0.75), _colour(rng, 0.08, 0.2, 0.55)
    size = rng.uniform(4, 6) * unit
    y = np.arange(h, dtype=np.float32)[:, None] + rng.uniform(0, size)
    x = np.arange(w, dtype=np.float32)[None, :] + rng.uniform(0, size)
    checker = (np.floor(y / size) + np.floor(x / size)) % 2
    img = _blend(a, b, 0.6 * checker)
    return img * (1 + 0.08 * smooth_noise(rng, h, w, 6 * unit, 6 * unit))[..., None]


SCENES: dict[str, Scene] = {
    "brick": _brick, "city": _city, "forest": _forest, "grass": _grass,
    "sand": _sand, "sky": _sky, "tiles": _tiles, "water": _water,
}
# Sorted by name, so an index here is the label an ImageFolder loader gives the class.
SCENE_CLASSES = tuple(sorted(SCENES))


def render_scene(name: str, rng: np.random.Generator, height: int, width: int, unit: float) -> np.ndarray:
    """A background of scene `name`: (height, width, 3) float32 in 0..1."""
    return np.clip(SCENES[name](rng, height, width, unit), 0, 1).astype(np.float32)
