"""Generate a synthetic world on disk (see `world.py` for what it holds).

Items are made by a pool of worker processes; each is a pure function of (seed, kind,
index), so the files do not depend on the number of workers. world.json is written last
and atomically: its presence means the world is complete, and a folder without one is
regenerated from scratch.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, fields
from pathlib import Path

from tqdm import tqdm

from distinit.data.synth.items import Recipe, action_video_path, make_item, split_ids
from distinit.data.synth.motions import MOTIONS
from distinit.data.synth.objects import GROUPS, OBJECT_CLASSES
from distinit.data.synth.render import Look
from distinit.data.synth.scenes import SCENE_CLASSES
from distinit.data.synth.world import (
    BACKGROUND,
    FORMAT_VERSION,
    MANIFEST,
    World,
    WorldError,
    WorldSize,
    load_world,
    read_manifest,
    resolve_size,
)

IN_PROGRESS = ".synth_in_progress"  # marks a folder this module is writing (safe to redo)
SUBDIRS = ("objects", "scenes", "corpus", "actions")
N_SPLITS = 3


def make_recipe(root: Path, seed: int, ws: WorldSize, look: Look | None = None) -> Recipe:
    """What the workers need to make any item of the world (seed, ws) under `root`."""
    own = {f.name for f in fields(Recipe)}
    params = {k: v for k, v in asdict(ws).items() if k in own}
    return Recipe(root=root, seed=seed, motions=tuple(MOTIONS)[: ws.n_motions],
                  look=look or Look(), **params)


def _jobs(ws: WorldSize, n_actions: int) -> list[tuple[str, int]]:
    counts = _counts(ws, n_actions)
    # Videos first: they are the slow items, so the pool's tail is made of quick stills.
    order = ("action", "corpus", "object_train", "object_test", "scene_train", "scene_test")
    return [(kind, i) for kind in order for i in range(counts[kind])]


def _counts(ws: WorldSize, n_actions: int) -> dict[str, int]:
    return {
        "object_train": ws.object_train_per_class * len(OBJECT_CLASSES),
        "object_test": ws.object_test_per_class * len(OBJECT_CLASSES),
        "scene_train": ws.scene_train_per_class * len(SCENE_CLASSES),
        "scene_test": ws.scene_test_per_class * len(SCENE_CLASSES),
        "corpus": ws.corpus_videos,
        "action": ws.action_videos_per_class * n_actions,
    }


_RECIPE: Recipe | None = None  # set once per worker process by _init_worker


def _init_worker(recipe: Recipe) -> None:
    global _RECIPE
    _RECIPE = recipe


def _run_job(job: tuple[str, int]) -> tuple[str, int, dict | None]:
    kind, index = job
    return kind, index, make_item(_RECIPE, kind, index)


def _run_all(recipe: Recipe, jobs: list[tuple[str, int]], workers: int) -> Iterator[tuple[str, int, dict | None]]:
    if workers <= 1:
        _init_worker(recipe)
        yield from map(_run_job, jobs)
        return
    # fork where the platform has it: workers start at once and need no importable __main__.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with multiprocessing.get_context(method).Pool(workers, _init_worker, (recipe,)) as pool:
        yield from pool.imap(_run_job, jobs, chunksize=8)


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _progress(items: Iterable, total: int, show: bool) -> Iterable:
    if not show:
        return items
    return tqdm(items, total=total, desc="synth", unit="item", mininterval=1.0)


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: row[k] for k in columns} for row in rows)


def _bytes_under(root: Path) -> int:
    return sum(p.stat().st_size for sub in SUBDIRS for p in (root / sub).rglob("*") if p.is_file())


def _prepare(root: Path) -> None:
    """Make `root` ready for a fresh generation, refusing to delete what this module did not write."""
    ours = [root / sub for sub in SUBDIRS if (root / sub).exists()]
    if ours and not (root / IN_PROGRESS).exists():
        raise WorldError(
            f"{root} already holds {', '.join(p.name for p in ours)} but no {MANIFEST}; it is not "
            f"a world this command wrote. Choose an empty or new folder"
        )
    for path in ours:  # left by an interrupted generation: redo from scratch
        shutil.rmtree(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / IN_PROGRESS).write_text("a world is being written here; an interrupted run is redone\n")


def _make_dirs(root: Path, ws: WorldSize, actions: list[str]) -> None:
    for split in ("train", "test"):
        for c in OBJECT_CLASSES:
            (root / "objects" / split / c.name).mkdir(parents=True)
        for s in SCENE_CLASSES:
            (root / "scenes" / split / s).mkdir(parents=True)
    for shard in range((ws.corpus_videos + 999) // 1000):
        (root / "corpus" / "videos" / f"{shard:03d}").mkdir(parents=True)
    for action in actions:
        (root / "actions" / "videos" / action).mkdir(parents=True)
    (root / "actions" / "splits").mkdir(parents=True)


def _write_tables(root: Path, recipe: Recipe, ws: WorldSize, rows: dict[str, list[dict]]) -> None:
    """Hidden corpus labels, metadata of every video, and the HMDB-style split files."""
    columns = ["path", "action", "motion", "group", "object", "scene"]
    corpus, actions = root / "corpus", recipe.action_classes
    _write_csv(corpus / "hidden_labels.csv",
               [{"path": r["path"], "label": r["action"]} for r in rows["corpus"]], ["path", "label"])
    classes = actions + ([BACKGROUND] if any(r["action"] == BACKGROUND for r in rows["corpus"]) else [])
    (corpus / "hidden_classes.txt").write_text("\n".join(classes) + "\n")
    _write_csv(corpus / "hidden_meta.csv", rows["corpus"], columns)
    _write_csv(root / "actions" / "meta.csv", rows["action"], columns)
    for a, action in enumerate(actions):
        for split in range(1, N_SPLITS + 1):
            ids = split_ids(recipe, split, a, ws.split_train, ws.split_test)
            lines = [f"{Path(action_video_path(action, k)).name} {i}" for k, i in enumerate(ids)]
            (root / "actions" / "splits" / f"{action}_test_split{split}.txt").write_text("\n".join(lines) + "\n")


def _manifest(root: Path, seed: int, ws: WorldSize, recipe: Recipe) -> dict:
    actions = recipe.action_classes
    return {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "size": ws.name,
        "params": asdict(ws),
        "look": asdict(recipe.look),
        "frame_size": ws.frame_size,
        "frames_per_video": ws.frames_per_video,
        "fps": ws.fps,
        "object_classes": [asdict(c) for c in OBJECT_CLASSES],
        "groups": list(GROUPS),
        "scene_classes": list(SCENE_CLASSES),
        "motions": list(recipe.motions),
        "action_classes": actions,
        "preferred_scene": {a: recipe.preferred_scene(a) for a in actions},
        "paths": {
            "objects_train": "objects/train", "objects_test": "objects/test",
            "scenes_train": "scenes/train", "scenes_test": "scenes/test",
            "corpus_dir": "corpus", "hidden_labels": "corpus/hidden_labels.csv",
            "hidden_classes": "corpus/hidden_classes.txt", "hidden_meta": "corpus/hidden_meta.csv",
            "actions_videos": "actions/videos", "actions_splits": "actions/splits",
            "actions_meta": "actions/meta.csv",
        },
        "counts": _counts(ws, len(actions)),
        "bytes_on_disk": _bytes_under(root),
    }


def generate_world(out_dir: str | Path, seed: int = 0, size: str | WorldSize = "small",
                   workers: int | None = None, progress: bool = False) -> World:
    """Write a world under `out_dir`, deterministically for (seed, size), and return it.

    If `out_dir` already holds a complete world of this seed and size, it is loaded, not
    remade. The output does not depend on `workers` (default: every available core).
    """
    root = Path(out_dir)
    ws = resolve_size(size)
    if (root / MANIFEST).exists():
        manifest = read_manifest(root)
        if manifest.get("seed") == seed and manifest.get("params") == asdict(ws):
            return load_world(root)
        raise WorldError(
            f"{root} holds another world (seed {manifest.get('seed')}, size "
            f"{manifest.get('size')!r}) than the one asked for (seed {seed}, size {ws.name!r}"
            f"{', other parameters' if manifest.get('size') == ws.name else ''}); choose another "
            f"folder or delete this one"
        )
    start = time.perf_counter()
    _prepare(root)
    recipe = make_recipe(root, seed, ws)
    _make_dirs(root, ws, recipe.action_classes)
    jobs = _jobs(ws, len(recipe.action_classes))
    workers = workers or available_cores()
    rows: dict[str, list[dict]] = {"corpus": [], "action": []}
    for kind, _, row in _progress(_run_all(recipe, jobs, workers), len(jobs), progress):
        if row is not None:
            rows[kind].append(row)  # imap keeps job order, so rows come sorted by index
    _write_tables(root, recipe, ws, rows)

    manifest = _manifest(root, seed, ws, recipe)
    manifest.update(seconds=round(time.perf_counter() - start, 2), workers=workers)
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(root / MANIFEST)  # atomic: a world.json is always a complete one
    (root / IN_PROGRESS).unlink()
    return load_world(root)
