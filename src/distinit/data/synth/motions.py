"""Motion patterns: how an object moves over a video (the "how" half of an action).

A motion maps `(rng, T, radius)` to a `Pose` of per-frame arrays in frame units (the frame
is the unit square, (0, 0) its top-left corner). Speeds and periods are chosen so any
8-frame window of a 16-frame video shows its motion: oscillation and orbit periods are at
most 12 frames, and a zoom changes the size by at least 1.45x in 8 frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class Pose:
    """Per-frame centre, radius and angle (radians) of an object, each of shape (T,)."""

    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray


Motion = Callable[[np.random.Generator, int, float], Pose]


def _start(rng: np.random.Generator, T: int, radius: float, spread: float = 0.08) -> Pose:
    # A resting pose near the centre with a fixed random orientation, and a slow drift so
    # that no motion is pixel-perfectly still.
    t = np.arange(T, dtype=np.float32)
    drift = rng.uniform(-0.003, 0.003, 2)
    x = 0.5 + rng.uniform(-spread, spread) + drift[0] * (t - T / 2)
    y = 0.5 + rng.uniform(-spread, spread) + drift[1] * (t - T / 2)
    angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.03, 0.03) * t
    return Pose(x, y, np.full(T, radius, np.float32), angle)


def _direction(rng: np.random.Generator) -> tuple[float, float]:
    a = rng.uniform(0, 2 * np.pi)
    return float(np.cos(a)), float(np.sin(a))


def translate(rng, T, radius):
    pose = _start(rng, T, radius, spread=0.05)
    dx, dy = _direction(rng)
    # 0.5-0.7 of the frame over the video (so longer videos do not leave the frame), at
    # most 0.045 frame widths per frame.
    speed = min(rng.uniform(0.5, 0.7) / max(T - 1, 1), 0.045)
    t = np.arange(T, dtype=np.float32) - (T - 1) / 2
    pose.x, pose.y = pose.x + dx * speed * t, pose.y + dy * speed * t
    return pose


def rotate(rng, T, radius):
    pose = _start(rng, T, radius)
    speed = rng.uniform(np.radians(18), np.radians(32)) * rng.choice([-1, 1])
    pose.angle = pose.angle + speed * np.arange(T)
    return pose


def zoom(rng, T, radius):
    pose = _start(rng, T, radius)
    rate = np.log(rng.uniform(2.3, 3.0)) / max(T - 1, 1) * rng.choice([-1, 1])  # grow or shrink
    pose.radius = radius * np.exp(rate * (np.arange(T) - (T - 1) / 2)).astype(np.float32)
    return pose


def oscillate(rng, T, radius):
    pose = _start(rng, T, radius, spread=0.05)
    dx, dy = _direction(rng)
    amp, period = rng.uniform(0.15, 0.22), rng.uniform(5, 8)
    s = amp * np.sin(2 * np.pi * np.arange(T) / period + rng.uniform(0, 2 * np.pi))
    pose.x, pose.y = pose.x + dx * s, pose.y + dy * s
    return pose


def orbit(rng, T, radius):
    pose = _start(rng, T, radius, spread=0.04)
    r, period = rng.uniform(0.15, 0.22), rng.uniform(8, 12) * rng.choice([-1, 1])
    a = 2 * np.pi * np.arange(T) / period + rng.uniform(0, 2 * np.pi)
    pose.x, pose.y = pose.x + r * np.cos(a), pose.y + r * np.sin(a)
    return pose


def bounce(rng, T, radius):
    pose = _start(rng, T, radius, spread=0.05)
    height, period = rng.uniform(0.25, 0.35), rng.uniform(6, 9)
    # |sin| is a ball's path: sharp turns at the floor, slow at the top.
    s = np.abs(np.sin(np.pi * np.arange(T) / period + rng.uniform(0, np.pi)))
    pose.y = pose.y + height * (0.5 - s)
    return pose


def shake(rng, T, radius):
    pose = _start(rng, T, radius)
    jitter = rng.uniform(0.025, 0.04)
    pose.x = pose.x + jitter * rng.choice([-1, 1], T) * rng.uniform(0.6, 1, T)
    pose.y = pose.y + jitter * rng.choice([-1, 1], T) * rng.uniform(0.6, 1, T)
    return pose


def still(rng, T, radius):
    return _start(rng, T, radius)


# Registry order matters: a world with n motions uses the first n.
MOTIONS: dict[str, Motion] = {
    "translate": translate, "rotate": rotate, "zoom": zoom, "oscillate": oscillate,
    "orbit": orbit, "bounce": bounce, "shake": shake, "still": still,
}


def motion_path(name: str, rng: np.random.Generator, T: int, radius: float) -> Pose:
    """The pose of an object of base `radius` (frame units) moving by motion `name`."""
    if name not in MOTIONS:
        raise ValueError(f"unknown motion {name!r}; valid: {', '.join(MOTIONS)}")
    pose = MOTIONS[name](rng, T, radius)
    return Pose(*(np.asarray(a, dtype=np.float32) for a in (pose.x, pose.y, pose.radius, pose.angle)))
