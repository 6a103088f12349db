"""The object vocabulary of the synthetic world: shapes, colours, patterns and their groups.

An object class is a shape with a colour family and a surface pattern. Classes fall into
four groups (what an action's "what moves" depends on) by a Latin square over colour and
pattern: every group holds each colour once and each pattern once, so a group is not a
colour, a pattern or a shape, only the identity of the object tells it. That is the
knowledge a still-image teacher trained on object classes can pass to a video student.

Shapes and patterns are functions of local coordinates (u, v), with the object's radius
at 1, so one renderer draws them at any position, scale and rotation, and patterns turn
with the object (that is what makes rotation visible on round shapes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Mask = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


def _polygon(n: int, radius: float = 0.95) -> Mask:
    # A point is inside a regular polygon when its projection on every edge normal is short.
    normals = [(np.cos(a), np.sin(a)) for a in np.pi / 2 + np.pi / n + 2 * np.pi * np.arange(n) / n]
    apothem = radius * np.cos(np.pi / n)

    def inside(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
        out = np.ones(u.shape, dtype=bool)
        for nx, ny in normals:
            out &= u * nx + v * ny < apothem
        return out

    return inside


def _disc(u, v, t):
    return u * u + v * v < 0.85


def _square(u, v, t):
    return np.maximum(np.abs(u), np.abs(v)) < 0.72


def _plus(u, v, t):
    w = 0.26 + 0.12 * t
    return ((np.abs(u) < w) & (np.abs(v) < 0.95)) | ((np.abs(v) < w) & (np.abs(u) < 0.95))


def _ring(u, v, t):
    r2 = u * u + v * v
    return (r2 < 0.92) & (r2 > (0.35 + 0.2 * t) ** 2)


def _star(u, v, t):
    # Five points: the radius limit swings between the inner and the outer radius with angle.
    a = np.arctan2(v, u)
    limit = 0.45 + 0.55 * np.abs(np.cos(2.5 * a)) ** (1.5 - t)
    return np.sqrt(u * u + v * v) < limit


def _crescent(u, v, t):
    return (u * u + v * v < 0.9) & ((u - 0.35 - 0.2 * t) ** 2 + v * v > 0.5)


def _heart(u, v, t):
    x, y = 1.2 * u, -1.2 * v + 0.3
    return (x * x + y * y - 1) ** 3 - x * x * y**3 < 0


def _arrow(u, v, t):
    shaft = (np.abs(v) < 0.22 + 0.1 * t) & (u > -0.95) & (u < 0.2)
    head = (u >= 0.1) & (u < 0.95) & (np.abs(v) < 0.8 * (0.95 - u))
    return shaft | head


def _tee(u, v, t):
    w = 0.24 + 0.1 * t
    bar = (v > -0.8) & (v < -0.8 + 2 * w) & (np.abs(u) < 0.75)
    return bar | ((np.abs(u) < w) & (v > -0.7) & (v < 0.85))


def _ell(u, v, t):
    w = 0.26 + 0.1 * t
    return ((u > -0.65) & (u < -0.65 + 2 * w) & (np.abs(v) < 0.8)) | (
        (v < 0.8) & (v > 0.8 - 2 * w) & (u > -0.65) & (u < 0.65)
    )


def _bowtie(u, v, t):
    return (np.abs(v) < (0.2 + 0.08 * t) + 0.65 * np.abs(u)) & (np.abs(u) < 0.8)


def _halfdisc(u, v, t):
    return (u * u + (v + 0.3) ** 2 < 0.95) & (v > -0.3)


def _bar(u, v, t):
    return (np.abs(u) < 0.95) & (np.abs(v) < 0.3 + 0.1 * t)


def _frame(u, v, t):
    m = np.maximum(np.abs(u), np.abs(v))
    return (m < 0.75) & (m > 0.3 + 0.12 * t)


def _dumbbell(u, v, t):
    ends = ((u - 0.55) ** 2 + v * v < 0.16) | ((u + 0.55) ** 2 + v * v < 0.16)
    return ends | ((np.abs(u) < 0.6) & (np.abs(v) < 0.2 + 0.08 * t))


# 16 shapes, chosen to stay distinct under any rotation (no square/diamond or plus/cross pairs).
SHAPES: dict[str, Mask] = {
    "disc": _disc, "square": _square, "triangle": _polygon(3), "plus": _plus,
    "ring": _ring, "star": _star, "crescent": _crescent, "heart": _heart,
    "arrow": _arrow, "tee": _tee, "ell": _ell, "bowtie": _bowtie,
    "halfdisc": _halfdisc, "bar": _bar, "frame": _frame, "dumbbell": _dumbbell,
}

# Colour families as hues (0..1); far apart so colour jitter keeps them apart.
HUES = {"red": 0.99, "yellow": 0.14, "teal": 0.46, "violet": 0.76}
PATTERNS = ("plain", "stripes", "dots", "checker")
GROUPS = ("alpha", "beta", "gamma", "delta")


@dataclass(frozen=True)
class ObjectClass:
    name: str  # the shape name; unique
    shape: str
    hue: str
    pattern: str
    group: str


def _object_classes() -> tuple[ObjectClass, ...]:
    # Fixed, not seeded: the vocabulary is the same in every world, only renderings vary.
    shapes = iter(SHAPES)
    out = []
    for h, hue in enumerate(HUES):
        for p, pattern in enumerate(PATTERNS):
            shape = next(shapes)
            out.append(ObjectClass(shape, shape, hue, pattern, GROUPS[(h + p) % len(GROUPS)]))
    return tuple(sorted(out, key=lambda c: c.name))


# Sorted by name, so an index here is the label an ImageFolder loader gives the class.
OBJECT_CLASSES = _object_classes()


@dataclass(frozen=True)
class Instance:
    """One object instance: a class with its own colours, proportions and pattern layout."""

    cls: ObjectClass
    base: tuple[float, float, float]  # RGB in 0..1
    second: tuple[float, float, float]  # the pattern's other colour
    thickness: float  # 0..1, for stroke-like shapes
    aspect: float  # stretch of u against v
    pattern_freq: float  # pattern cycles per unit of radius
    pattern_angle: float
    pattern_phase: float


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def sample_instance(cls: ObjectClass, rng: np.random.Generator, contrast: float) -> Instance:
    """Draw an instance of `cls`; `contrast` (0..1) is how far the pattern colour departs."""
    hue = (HUES[cls.hue] + rng.uniform(-0.035, 0.035)) % 1.0
    sat, val = rng.uniform(0.55, 0.9), rng.uniform(0.6, 0.95)
    base = np.array(hsv_to_rgb(hue, sat, val))
    # The pattern colour is a darker or a paler version of the base: moderate contrast on
    # purpose, since full-contrast textures made a teacher that saw mostly edges.
    # Pale patterns only on dark bases: pale on a bright yellow would be invisible.
    target = np.full(3, 1.0) if val < 0.75 and rng.random() < 0.4 else base * 0.2
    c = contrast * rng.uniform(0.75, 1.0)
    second = base + c * (target - base)
    return Instance(
        cls=cls,
        base=tuple(base.tolist()),
        second=tuple(second.tolist()),
        thickness=float(rng.uniform()),
        aspect=float(np.exp(rng.uniform(-0.15, 0.15))),
        pattern_freq=float(rng.uniform(0.8, 1.1)),
        pattern_angle=float(rng.uniform(0, 2 * np.pi)),
        pattern_phase=float(rng.uniform(0, 1)),
    )


def pattern_mix(inst: Instance, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """How much of the pattern colour each point shows (0..1), in the object's own frame."""
    ca, sa = np.cos(inst.pattern_angle), np.sin(inst.pattern_angle)
    a, b = u * ca + v * sa, -u * sa + v * ca
    f, ph = inst.pattern_freq, inst.pattern_phase
    if inst.cls.pattern == "plain":
        # A shading ramp, so even a plain disc shows which way it has turned.
        return np.clip(0.5 + 0.45 * a, 0.0, 1.0)
    if inst.cls.pattern == "stripes":
        return (np.sin(2 * np.pi * (1.4 * f * a + ph)) > 0).astype(np.float32)
    if inst.cls.pattern == "dots":
        da = (1.5 * f * a + ph) % 1.0 - 0.5
        db = (1.5 * f * b + ph) % 1.0 - 0.5
        return (da * da + db * db < 0.09).astype(np.float32)
    if inst.cls.pattern == "checker":
        return ((np.floor(1.2 * f * a + ph) + np.floor(1.2 * f * b + ph)) % 2).astype(np.float32)
    raise ValueError(f"unknown pattern {inst.cls.pattern!r}")
