"""The one renderer behind every image and video of the synthetic world.

Object stills, scene stills and video frames all come from `render_frames`: a scene
background (seen through a panning camera), a few grey clutter shapes that belong to the
scene, one object of a class, lighting and sensor noise. Sharing the renderer is what
lets a teacher trained on stills read video frames (the prototype found the teacher's
accuracy on frames decides what distillation can give).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from distinit.data.synth.motions import Pose, motion_path
from distinit.data.synth.objects import (
    OBJECT_CLASSES,
    SHAPES,
    Instance,
    ObjectClass,
    hsv_to_rgb,
    pattern_mix,
    sample_instance,
)
from distinit.data.synth.scenes import SCENE_CLASSES, render_scene

SUPERSAMPLE = 2  # samples per pixel side: edges and stripes get anti-aliased, not jagged
RADIUS_RANGE = (0.19, 0.27)  # object radius in frame widths: 12-17 px across at 32 px
# Object stills are photos framed around their subject (as ImageNet's are): the object is large
# and near the centre. Videos are not framed: objects move, zoom and leave the centre.
STILL_RADIUS = (0.22, 0.36)  # object stills: log-uniform
STILL_CENTRE = (0.38, 0.62)  # object stills: centre coordinates, uniform


@dataclass(frozen=True)
class Look:
    """Rendering parameters shared by stills and videos."""

    contrast: float = 0.55  # how far an object's pattern colour departs from its base colour
    noise_std: float = 2.0  # sensor noise, in 0..255 grey levels
    camera_prob: float = 0.6  # share of videos with a panning camera
    max_pan: float = 0.02  # camera speed, frame widths per frame
    max_clutter: int = 2  # grey background shapes per still (photos are framed around their subject)
    video_clutter: int = 3  # ... and per video (footage is not framed around anything)
    shutter_samples: int = 3  # video frames average the object over this many instants...
    shutter: float = 0.5  # ... spread over this share of the frame interval (motion blur)


def _pool(a: np.ndarray, ss: int) -> np.ndarray:
    """Average ss x ss blocks over axes 1 and 2 (strided sums: much faster than a 6-D mean)."""
    out = a[:, 0::ss, 0::ss].copy()
    for i in range(ss):
        for j in range(ss):
            if i or j:
                out += a[:, i::ss, j::ss]
    return out / (ss * ss)


def _draw(canvas: np.ndarray, pose: Pose, inside: Callable, mix: Callable,
          base: np.ndarray, second: np.ndarray, extent: float = 1.3,
          coverage: np.ndarray | None = None) -> None:
    """Paint a shape over `canvas` (T, H, W, 3) in place, anti-aliased by supersampling; its
    coverage (0..1 per pixel) is painted over `coverage` (T, H, W) too when given.

    Only a box around the shape is rendered (`extent` radii from its centre, which holds
    every shape at any aspect), so the cost follows the object's size, not the frame's.
    """
    T, H, W, _ = canvas.shape
    ss = SUPERSAMPLE
    half = extent * float(pose.radius.max())
    bw, bh = min(int(np.ceil(2 * half * W)) + 2, W), min(int(np.ceil(2 * half * H)) + 2, H)
    x0 = np.floor(pose.x * W - bw / 2).astype(int)  # (T,) top-left pixel of each frame's box
    y0 = np.floor(pose.y * H - bh / 2).astype(int)
    grid_x, grid_y = np.arange(bw * ss, dtype=np.float32) + 0.5, np.arange(bh * ss, dtype=np.float32) + 0.5
    xs = ((x0[:, None] * ss).astype(np.float32) + grid_x[None, :]) / np.float32(W * ss)  # (T, bw*ss)
    ys = ((y0[:, None] * ss).astype(np.float32) + grid_y[None, :]) / np.float32(H * ss)
    # Box coordinates to the shape's own frame: (T, bh*ss, bw*ss).
    dx, dy = xs[:, None, :] - pose.x[:, None, None], ys[:, :, None] - pose.y[:, None, None]
    c, s = np.cos(pose.angle)[:, None, None], np.sin(pose.angle)[:, None, None]
    r = pose.radius[:, None, None]
    u, v = (dx * c + dy * s) / r, (-dx * s + dy * c) / r
    alpha = inside(u, v).astype(np.float32)
    # Colour is linear in the pattern mix, so pooling coverage and mix before colouring is
    # exact and costs one channel instead of three.
    mixed = _pool(alpha * mix(u, v), ss)[..., None]  # (T, bh, bw, 1)
    alpha = _pool(alpha, ss)[..., None]
    paint = alpha * base + mixed * (second - base)  # premultiplied by coverage: (T, bh, bw, 3)
    for t in range(T):
        # Clip the box to the frame: objects may leave it partly or wholly.
        ya, yb, xa, xb = max(y0[t], 0), min(y0[t] + bh, H), max(x0[t], 0), min(x0[t] + bw, W)
        if ya >= yb or xa >= xb:
            continue
        a = alpha[t, ya - y0[t]:yb - y0[t], xa - x0[t]:xb - x0[t]]
        p = paint[t, ya - y0[t]:yb - y0[t], xa - x0[t]:xb - x0[t]]
        canvas[t, ya:yb, xa:xb] = canvas[t, ya:yb, xa:xb] * (1 - a) + p
        if coverage is not None:
            coverage[t, ya:yb, xa:xb] = coverage[t, ya:yb, xa:xb] * (1 - a[..., 0]) + a[..., 0]


def draw_object(canvas: np.ndarray, inst: Instance, pose: Pose,
                coverage: np.ndarray | None = None) -> None:
    """Paint object instance `inst` at `pose` over `canvas` (T, H, W, 3) in place (and its
    coverage over `coverage` (T, H, W))."""
    shape = SHAPES[inst.cls.shape]
    a = inst.aspect

    def inside(u, v):
        return shape(u * a, v / a, inst.thickness)

    def mix(u, v):
        return pattern_mix(inst, u, v)

    _draw(canvas, pose, inside, mix, np.array(inst.base, np.float32),
          np.array(inst.second, np.float32), coverage=coverage)


def _draw_clutter(canvas: np.ndarray, rng: np.random.Generator, pan: np.ndarray, count: int) -> None:
    # Unsaturated ellipses and boxes fixed in the scene: they move only with the camera, so
    # they are there in every frame without carrying any action.
    T = canvas.shape[0]
    for _ in range(count):
        x, y = rng.uniform(0.05, 0.95, 2)
        radius = np.full(T, rng.uniform(0.06, 0.12), np.float32)
        pose = Pose(x - pan[:, 0], y - pan[:, 1], radius, np.full(T, rng.uniform(0, np.pi), np.float32))
        grey = np.array(hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.15), rng.uniform(0.25, 0.85)), np.float32)
        stretch = rng.uniform(0.5, 1.0)
        boxy = rng.random() < 0.5

        def inside(u, v, stretch=stretch, boxy=boxy):
            if boxy:
                return (np.abs(u) < 0.9) & (np.abs(v) < 0.9 * stretch)
            return u * u + (v / stretch) ** 2 < 0.8

        def mix(u, v):
            return np.clip(0.5 + 0.4 * v, 0, 1)

        _draw(canvas, pose, inside, mix, grey, grey * 0.7)


def _background(rng: np.random.Generator, scene: str, size: int, pan: np.ndarray) -> np.ndarray:
    """Frames of a scene seen through a camera offset by `pan` (T, 2) frame widths: (T, S, S, 3)."""
    shift = pan * size
    margin = int(np.ceil(np.abs(shift).max())) + 1
    big = render_scene(scene, rng, size + 2 * margin, size + 2 * margin, size / 32)
    frames = np.empty((len(pan), size, size, 3), np.float32)
    for t, (sx, sy) in enumerate(shift):
        # Sub-pixel pan by bilinear interpolation of the four neighbouring crops.
        x0, y0 = margin + int(np.floor(sx)), margin + int(np.floor(sy))
        fx, fy = sx - np.floor(sx), sy - np.floor(sy)
        crop = big[y0:y0 + size + 1, x0:x0 + size + 1]
        frames[t] = ((1 - fy) * ((1 - fx) * crop[:-1, :-1] + fx * crop[:-1, 1:])
                     + fy * ((1 - fx) * crop[1:, :-1] + fx * crop[1:, 1:]))
    return frames


def _camera(rng: np.random.Generator, T: int, look: Look) -> np.ndarray:
    if rng.random() >= look.camera_prob:
        return np.zeros((T, 2), np.float32)
    a, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.25, 1.0) * look.max_pan
    t = np.arange(T, dtype=np.float32)[:, None]
    return (t * speed * np.array([np.cos(a), np.sin(a)], np.float32)).astype(np.float32)


def _finish(frames: np.ndarray, rng: np.random.Generator, look: Look) -> np.ndarray:
    # Exposure changes per image and flickers a little per frame; noise is fresh per frame.
    T = frames.shape[0]
    gain = rng.uniform(0.85, 1.1) * (1 + rng.normal(0, 0.01, (T, 1, 1, 1)))
    noise = rng.standard_normal(frames.shape, dtype=np.float32) * look.noise_std
    out = frames * np.float32(255) * gain.astype(np.float32) + noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_frames(rng: np.random.Generator, size: int, T: int, scene: str,
                  obj: ObjectClass | Instance | None, motion: str = "still",
                  look: Look = Look(), camera: bool = True, pose: Pose | None = None,
                  mask: np.ndarray | None = None) -> np.ndarray:
    """Render T frames (T, size, size, 3) uint8: `obj` moving by `motion` over `scene`.

    `mask` (T, size, size) float32, when given, receives the object's visible coverage (0..1,
    averaged over the shutter like the frames): where the moving foreground is. Asking for it
    draws no random numbers, so the frames are the same either way.

    `obj` is a class (a fresh instance is drawn), a given instance, or None (scene only);
    a given `pose` replaces the motion's. `camera=True` renders video footage: a panning
    camera, more clutter and motion blur; `camera=False` a still photo.
    """
    pan = _camera(rng, T, look) if camera else np.zeros((T, 2), np.float32)
    frames = _background(rng, scene, size, pan)
    clutter = look.video_clutter if camera else look.max_clutter
    _draw_clutter(frames, rng, pan, int(rng.integers(0, clutter + 1)))
    if obj is not None:
        inst = obj if isinstance(obj, Instance) else sample_instance(obj, rng, look.contrast)
        if pose is None:
            pose = motion_path(motion, rng, T, rng.uniform(*RADIUS_RANGE))
        k = look.shutter_samples if camera and T > 1 else 1
        cover = None if mask is None else np.zeros((T * k, size, size), np.float32)
        if k > 1:  # motion blur: the object drawn at k instants of an open shutter, averaged
            layers = np.repeat(frames, k, axis=0)
            draw_object(layers, inst, _shutter_poses(pose, k, look.shutter), cover)
            frames = layers.reshape(T, k, *frames.shape[1:]).mean(axis=1)
        else:
            draw_object(frames, inst, pose, cover)
        if mask is not None:
            mask[:] = cover.reshape(T, k, size, size).mean(axis=1)
    return _finish(frames, rng, look)


def _shutter_poses(pose: Pose, k: int, shutter: float) -> Pose:
    """The pose at k instants within `shutter` of each frame interval: (T * k,) arrays, frame-major.

    Linear between frames; the last frame moves on as the one before it did.
    """
    offsets = np.linspace(0.0, shutter, k, endpoint=False, dtype=np.float32)

    def spread(a: np.ndarray) -> np.ndarray:
        step = np.diff(a, append=2 * a[-1:] - a[-2:-1]) if len(a) > 1 else np.zeros_like(a)
        return (a[:, None] + step[:, None] * offsets[None, :]).reshape(-1).astype(np.float32)

    return Pose(spread(pose.x), spread(pose.y), spread(pose.radius), spread(pose.angle))


def object_still(rng: np.random.Generator, size: int, obj: ObjectClass | Instance,
                 look: Look = Look()) -> np.ndarray:
    """An object over a random scene: (size, size, 3) uint8."""
    scene = SCENE_CLASSES[rng.integers(len(SCENE_CLASSES))]
    # Framed like a photo: large and near the centre (see STILL_RADIUS); video frames show
    # objects smaller, off-centre and blurred, the shift a teacher must bridge on frames.
    x, y = rng.uniform(*STILL_CENTRE, 2)
    radius = np.exp(rng.uniform(*np.log(STILL_RADIUS)))
    pose = Pose(np.array([x], np.float32), np.array([y], np.float32),
                np.array([radius], np.float32), np.array([rng.uniform(0, 2 * np.pi)], np.float32))
    return render_frames(rng, size, 1, scene, obj, look=look, camera=False, pose=pose)[0]


def scene_still(rng: np.random.Generator, size: int, scene: str, look: Look = Look(),
                object_prob: float = 0.3) -> np.ndarray:
    """A scene, sometimes with an object of a random class in it: (size, size, 3) uint8."""
    obj = OBJECT_CLASSES[rng.integers(len(OBJECT_CLASSES))] if rng.random() < object_prob else None
    return render_frames(rng, size, 1, scene, obj, look=look, camera=False)[0]
