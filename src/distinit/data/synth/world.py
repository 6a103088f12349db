"""What a synthetic world is: its sizes, its manifest (world.json) and loading it back.

The world stands in for the data the paper uses and this machine cannot download:
object stills (ImageNet), scene stills (Places), an unlabeled video corpus (Kinetics)
and a small labeled action set in HMDB-51's format (HMDB-51). Layout under OUT:

    objects/{train,test}/<class>/<n>.png     scenes/{train,test}/<class>/<n>.png
    corpus/videos/<shard>/<n>.mp4            corpus/hidden_labels.csv, hidden_classes.txt
    actions/videos/<action>/<name>.mp4       actions/splits/<action>_test_split{1,2,3}.txt
    world.json                               written last: its presence means complete
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from distinit.data.synth.motions import MOTIONS
from distinit.errors import UserError

FORMAT_VERSION = 2  # 2: distinct training instances, motion blur, background videos
MANIFEST = "world.json"
BACKGROUND = "background"  # hidden label of corpus videos that show no object of any class


class WorldError(UserError):
    """A world folder is missing, incomplete or holds a different world."""


@dataclass(frozen=True)
class WorldSize:
    """How big a world is: frame size, video length and the count of every kind of item."""

    name: str
    frame_size: int = 32
    frames_per_video: int = 16
    fps: int = 16
    n_motions: int = 5  # actions = the first n_motions motions x the 4 object groups
    corpus_videos: int = 4000
    action_videos_per_class: int = 36
    split_train: int = 10  # per action and split; the rest of an action's videos are unused
    split_test: int = 20
    object_train_per_class: int = 160
    object_test_per_class: int = 40
    # Distinct instances per class behind the train stills (ImageNet: a new object in nearly
    # every photo); fewer than object_train_per_class repeats them.
    object_train_instances: int = 160
    scene_train_per_class: int = 100
    scene_test_per_class: int = 30
    scene_bias: float = 0.3  # share of videos shot in their action's usual scene
    # Share of corpus videos with no object of any class (uncurated footage: empty scenes,
    # establishing shots); their hidden label is BACKGROUND.
    corpus_background: float = 0.15
    crf: int = 18  # x264 quality (lower is better)
    # Full-resolution colour: 4:2:0 halves chroma to 16x16 at 32 px and cost a still-image
    # teacher 14 points of accuracy on frames (4:4:4: 4 points, at the same file size).
    pix_fmt: str = "yuv444p"

    def __post_init__(self) -> None:
        if not 1 <= self.n_motions <= len(MOTIONS):
            raise WorldError(f"n_motions must be 1..{len(MOTIONS)}, got {self.n_motions}")
        if self.split_train < 1 or self.split_test < 1:
            raise WorldError("split_train and split_test must be at least 1")
        if self.split_train + self.split_test > self.action_videos_per_class:
            raise WorldError(
                f"split_train + split_test ({self.split_train} + {self.split_test}) exceeds "
                f"action_videos_per_class ({self.action_videos_per_class})"
            )
        if not 0 <= self.corpus_background < 1:
            raise WorldError(f"corpus_background must be in [0, 1), got {self.corpus_background}")
        if self.frame_size % 2:
            raise WorldError(f"frame_size must be even (yuv420p video), got {self.frame_size}")


SIZES: dict[str, WorldSize] = {
    # For tests: every kind of file, a few of each, in about a second.
    "tiny": WorldSize("tiny", n_motions=2, corpus_videos=12, action_videos_per_class=3,
                      split_train=1, split_test=1, object_train_per_class=2,
                      object_test_per_class=1, object_train_instances=2,
                      scene_train_per_class=2, scene_test_per_class=1),
    # The demo's world: teacher, distillations and fine-tunes in minutes on 2 cores.
    "small": WorldSize("small"),
    "medium": WorldSize("medium", frame_size=64, frames_per_video=24, n_motions=8,
                        corpus_videos=12000, action_videos_per_class=70, split_train=30,
                        split_test=30, object_train_per_class=500, object_test_per_class=100,
                        object_train_instances=500, scene_train_per_class=300,
                        scene_test_per_class=60),
}


@dataclass
class World:
    """A generated world, as described by its world.json (paths are absolute)."""

    root: Path
    seed: int
    size: str
    params: WorldSize
    object_classes: list[str]
    object_groups: list[str]  # the group of each object class
    scene_classes: list[str]
    action_classes: list[str]
    motions: list[str]
    groups: list[str]
    corpus_videos: list[Path]
    corpus_labels: list[int]  # hidden: index into corpus_classes, for the supervised upper bound
    corpus_classes: list[str]  # the actions, then BACKGROUND when the corpus has such videos
    frame_size: int
    frames_per_video: int
    fps: int
    objects_train: Path
    objects_test: Path
    scenes_train: Path
    scenes_test: Path
    corpus_dir: Path
    hidden_labels: Path
    actions_videos: Path
    actions_splits: Path
    counts: dict[str, int] = field(default_factory=dict)
    bytes_on_disk: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """Counts, sizes, bytes on disk and the time generation took, for a terminal."""
        c = self.counts
        return "\n".join([
            f"world {self.root} (seed {self.seed}, size {self.size})",
            f"  frames {self.frame_size}x{self.frame_size}, {self.frames_per_video} frames per video at {self.fps} fps",
            f"  object stills: {len(self.object_classes)} classes in {len(self.groups)} groups, "
            f"{c.get('object_train', 0)} train / {c.get('object_test', 0)} test",
            f"  scene stills: {len(self.scene_classes)} classes, "
            f"{c.get('scene_train', 0)} train / {c.get('scene_test', 0)} test",
            f"  unlabeled corpus: {len(self.corpus_videos)} videos "
            f"(hidden labels: {len(self.action_classes)} actions)",
            f"  action set: {len(self.action_classes)} actions ({len(self.motions)} motions x "
            f"{len(self.groups)} groups), {c.get('action', 0)} videos, split 1: "
            f"{self.params.split_train} train / {self.params.split_test} test per action",
            f"  {self.bytes_on_disk / 2**20:.1f} MiB on disk, generated in {self.seconds:.1f} s",
        ])


def resolve_size(size: str | WorldSize) -> WorldSize:
    """A size by name (one of SIZES), or the given WorldSize."""
    if isinstance(size, WorldSize):
        return size
    if size not in SIZES:
        raise WorldError(f"unknown world size {size!r}; valid: {', '.join(SIZES)}")
    return SIZES[size]


def read_manifest(root: Path) -> dict:
    """The parsed world.json of `root`; WorldError if it is absent or not JSON."""
    path = root / MANIFEST
    if not path.is_file():
        raise WorldError(
            f"no {MANIFEST} in {root}: not a generated world, or its generation did not finish; "
            f"run: distinit synth {root} --seed N"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorldError(f"{path} is not valid JSON ({e}); delete {root} and generate it again") from None
    if not isinstance(manifest, dict):
        raise WorldError(f"{path} is not a world manifest; delete {root} and generate it again")
    return manifest


def load_world(out_dir: str | Path) -> World:
    """Read a world from its world.json; `WorldError` if it is missing or incomplete."""
    root = Path(out_dir)
    m = read_manifest(root)
    redo = f"delete {root} and run: distinit synth {root} --seed N"
    if m.get("format_version") != FORMAT_VERSION:
        raise WorldError(
            f"{root / MANIFEST} has format version {m.get('format_version')}, this code reads "
            f"{FORMAT_VERSION}; {redo}"
        )
    try:
        params = WorldSize(**m["params"])
        paths = {k: root / v for k, v in m["paths"].items()}
        classes = m["object_classes"]
        world_kwargs = dict(
            root=root, seed=int(m["seed"]), size=str(m["size"]), params=params,
            object_classes=[c["name"] for c in classes], object_groups=[c["group"] for c in classes],
            scene_classes=list(m["scene_classes"]), action_classes=list(m["action_classes"]),
            motions=list(m["motions"]), groups=list(m["groups"]),
            frame_size=int(m["frame_size"]), frames_per_video=int(m["frames_per_video"]),
            fps=int(m["fps"]), counts=dict(m["counts"]), bytes_on_disk=int(m["bytes_on_disk"]),
            seconds=float(m["seconds"]),
            **{k: paths[k] for k in ("objects_train", "objects_test", "scenes_train", "scenes_test",
                                     "corpus_dir", "hidden_labels", "actions_videos", "actions_splits")},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise WorldError(f"{root / MANIFEST} is incomplete or malformed ({e!r}); {redo}") from None
    missing = [p for p in paths.values() if not p.exists()]
    if missing:
        raise WorldError(f"{root} is incomplete: {missing[0]} is missing; {redo}")
    corpus_classes = paths["hidden_classes"].read_text().split()
    videos, labels = _read_hidden_labels(paths["hidden_labels"], corpus_classes, redo)
    absent = next((v for v in videos if not v.is_file()), None)
    if absent is not None:
        raise WorldError(f"{root} is incomplete: corpus video {absent} is missing; {redo}")
    return World(corpus_videos=videos, corpus_labels=labels, corpus_classes=corpus_classes,
                 **world_kwargs)


def _read_hidden_labels(path: Path, actions: list[str], redo: str) -> tuple[list[Path], list[int]]:
    index = {a: i for i, a in enumerate(actions)}
    videos, labels = [], []
    with path.open(newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if lineno == 1:
                continue  # header
            if len(row) != 2 or row[1] not in index:
                raise WorldError(f"{path}:{lineno}: expected 'path,action' with a known action, got {row}; {redo}")
            videos.append(path.parent / row[0])
            labels.append(index[row[1]])
    return videos, labels


def with_overrides(size: str | WorldSize, **changes: object) -> WorldSize:
    """A named size with some fields changed (e.g. a smaller corpus for a quick run)."""
    return replace(resolve_size(size), **changes)
