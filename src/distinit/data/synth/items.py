"""What each file of the synthetic world holds, made one item at a time.

Every item (a still or a video) is a pure function of (seed, kind, index): its random
generator is seeded from exactly those, so a world does not depend on how many worker
processes made it or in which order. `make_item` runs in the workers; `Recipe` is the
small picklable description of the world they all share.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from distinit.data.synth.objects import GROUPS, OBJECT_CLASSES, Instance, sample_instance
from distinit.data.synth.render import Look, object_still, render_frames, scene_still
from distinit.data.synth.scenes import SCENE_CLASSES
from distinit.data.synth.world import BACKGROUND
from distinit.data.video.io import write_video

# Stable codes for the kinds of random draws; never reorder (that would change every world).
KINDS = {
    "object_train": 1, "object_test": 2, "scene_train": 3, "scene_test": 4,
    "corpus": 5, "action": 6, "instance": 7, "split": 8, "scene_preference": 9,
}


def item_rng(seed: int, kind: str, *index: int) -> np.random.Generator:
    """The generator of one item, from (seed, kind, index...) alone."""
    return np.random.default_rng([seed, KINDS[kind], *index])


def action_name(motion: str, group: str) -> str:
    return f"{motion}_{group}"


@dataclass(frozen=True)
class Recipe:
    """Everything a worker needs to make any item of a world."""

    root: Path
    seed: int
    frame_size: int
    frames_per_video: int
    fps: int
    motions: tuple[str, ...]
    object_train_per_class: int
    object_test_per_class: int
    object_train_instances: int
    scene_train_per_class: int
    scene_test_per_class: int
    action_videos_per_class: int
    scene_bias: float
    corpus_background: float
    crf: int
    pix_fmt: str
    look: Look

    @property
    def action_classes(self) -> list[str]:
        # Sorted, so a label index is the one an HMDB-style loader derives from file names.
        return sorted(action_name(m, g) for m in self.motions for g in GROUPS)

    def preferred_scene(self, action: str) -> str:
        """Each action's usual scene: scenes hint at actions (as in real data), never decide them."""
        rng = item_rng(self.seed, "scene_preference", self.action_classes.index(action))
        return SCENE_CLASSES[rng.integers(len(SCENE_CLASSES))]

    def train_instance(self, cls_index: int, k: int) -> Instance:
        """Instance k of a class's fixed training pool (test stills and videos draw fresh ones)."""
        rng = item_rng(self.seed, "instance", cls_index, k)
        return sample_instance(OBJECT_CLASSES[cls_index], rng, self.look.contrast)


def corpus_path(index: int) -> str:
    """Path of corpus video `index` relative to the corpus folder (1,000 videos per shard)."""
    return f"videos/{index // 1000:03d}/{index:06d}.mp4"


def action_video_path(action: str, k: int) -> str:
    """Path of labeled video k of `action`, relative to the actions' video folder."""
    return f"{action}/{action}_{k:03d}.mp4"


def _write_png(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, optimize=False, compress_level=6)


def _video(recipe: Recipe, rng: np.random.Generator, action: str,
           mask: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    motion, group = action.rsplit("_", 1)
    members = [i for i, c in enumerate(OBJECT_CLASSES) if c.group == group]
    cls = OBJECT_CLASSES[members[rng.integers(len(members))]]
    if rng.random() < recipe.scene_bias:
        scene = recipe.preferred_scene(action)
    else:
        scene = SCENE_CLASSES[rng.integers(len(SCENE_CLASSES))]
    frames = render_frames(rng, recipe.frame_size, recipe.frames_per_video, scene, cls, motion,
                           recipe.look, mask=mask)
    return frames, {"action": action, "motion": motion, "group": group, "object": cls.name, "scene": scene}


def _background_video(recipe: Recipe, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    scene = SCENE_CLASSES[rng.integers(len(SCENE_CLASSES))]
    frames = render_frames(rng, recipe.frame_size, recipe.frames_per_video, scene, None,
                           look=recipe.look)
    return frames, {"action": BACKGROUND, "motion": "", "group": "", "object": "", "scene": scene}


# x264's macroblock-tree rate control made 27 of 150 tiny videos come out different from one
# run to the next (same frames, one thread); weighted P-prediction a few more. Without both,
# 4 runs x 300 videos were byte-identical, and the files are slightly smaller.
X264_OPTIONS = {"preset": "veryfast", "threads": "1", "x264-params": "mbtree=0:weightp=0"}


def _encode(recipe: Recipe, path: Path, frames: np.ndarray) -> None:
    # One encoder thread per video: the pool already uses every core.
    write_video(path, frames, fps=recipe.fps, codec="libx264", pix_fmt=recipe.pix_fmt,
                options={"crf": str(recipe.crf), **X264_OPTIONS})


def make_item(recipe: Recipe, kind: str, index: int) -> dict | None:
    """Render and write item `index` of `kind`; videos return their metadata row."""
    rng = item_rng(recipe.seed, kind, index)
    size = recipe.frame_size
    if kind in ("object_train", "object_test"):
        per_class = recipe.object_train_per_class if kind == "object_train" else recipe.object_test_per_class
        c, j = divmod(index, per_class)
        obj = (recipe.train_instance(c, j % recipe.object_train_instances)
               if kind == "object_train" else OBJECT_CLASSES[c])
        split = kind.removeprefix("object_")
        _write_png(recipe.root / "objects" / split / OBJECT_CLASSES[c].name / f"{j:04d}.png",
                   object_still(rng, size, obj, recipe.look))
        return None
    if kind in ("scene_train", "scene_test"):
        per_class = recipe.scene_train_per_class if kind == "scene_train" else recipe.scene_test_per_class
        c, j = divmod(index, per_class)
        split = kind.removeprefix("scene_")
        _write_png(recipe.root / "scenes" / split / SCENE_CLASSES[c] / f"{j:04d}.png",
                   scene_still(rng, size, SCENE_CLASSES[c], recipe.look))
        return None
    if kind == "corpus":
        # Actions drawn uniformly: the corpus is a large, balanced, unlabeled pool (Kinetics-like),
        # and uncurated: some of its videos show no object of any class.
        actions = recipe.action_classes
        if rng.random() < recipe.corpus_background:
            frames, meta = _background_video(recipe, rng)
        else:
            frames, meta = _video(recipe, rng, actions[rng.integers(len(actions))])
        rel = corpus_path(index)
        _encode(recipe, recipe.root / "corpus" / rel, frames)
        return {"path": rel, **meta}
    if kind == "action":
        a, k = divmod(index, recipe.action_videos_per_class)
        action = recipe.action_classes[a]
        frames, meta = _video(recipe, rng, action)
        rel = action_video_path(action, k)
        _encode(recipe, recipe.root / "actions" / "videos" / rel, frames)
        return {"path": rel, **meta}
    raise ValueError(f"unknown item kind {kind!r}")


def action_frames_and_mask(recipe: Recipe, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Action video `index` rendered again, before encoding: its frames (T, S, S, 3) uint8 and
    the object's coverage (T, S, S) float32 in 0..1 (the world's ground-truth foreground)."""
    rng = item_rng(recipe.seed, "action", index)
    mask = np.zeros((recipe.frames_per_video, recipe.frame_size, recipe.frame_size), np.float32)
    a = index // recipe.action_videos_per_class
    frames, _ = _video(recipe, rng, recipe.action_classes[a], mask)
    return frames, mask


def split_ids(recipe: Recipe, split: int, action_index: int, train: int, test: int) -> list[int]:
    """HMDB subset ids (1 train, 2 test, 0 unused) of one action's videos in one split."""
    n = recipe.action_videos_per_class
    order = item_rng(recipe.seed, "split", split, action_index).permutation(n)
    ids = [0] * n
    for rank, k in enumerate(order):
        ids[k] = 1 if rank < train else 2 if rank < train + test else 0
    return ids

