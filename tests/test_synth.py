"""The synthetic world: determinism, file formats, manifest, idempotence, CLI and preview."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distinit import cli
from distinit.data.synth import SIZES, WorldError, generate_world, load_world
from distinit.data.synth.cli import main as synth_main
from distinit.data.synth.generate import make_recipe
from distinit.data.synth.items import make_item
from distinit.data.synth.objects import OBJECT_CLASSES
from distinit.data.synth.render import Look
from distinit.data.synth.world import BACKGROUND
from distinit.data.video.io import read_all_frames

TINY = SIZES["tiny"]
LABEL_FILES = ["corpus/hidden_labels.csv", "corpus/hidden_classes.txt", "corpus/hidden_meta.csv",
               "actions/meta.csv"]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """Seed 0 made by one process and by two, and seed 1."""
    base = tmp_path_factory.mktemp("worlds")
    return {
        "a": generate_world(base / "a", seed=0, size="tiny", workers=1),
        "b": generate_world(base / "b", seed=0, size="tiny", workers=2),
        "c": generate_world(base / "c", seed=1, size="tiny", workers=2),
    }


def _videos(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.mp4"))


def _split_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in (root / "actions" / "splits").iterdir())


def test_same_seed_gives_same_world_whatever_the_worker_count(worlds):
    a, b = worlds["a"].root, worlds["b"].root
    for name in LABEL_FILES + [str(p) for p in _split_files(a)]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _split_files(a) == _split_files(b)
    videos = _videos(a)
    assert videos == _videos(b)
    assert len(videos) == TINY.corpus_videos + TINY.action_videos_per_class * 4 * TINY.n_motions
    for rel in videos:
        np.testing.assert_array_equal(read_all_frames(a / rel), read_all_frames(b / rel), err_msg=str(rel))
    pngs = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert pngs == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    for rel in pngs:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_an_item_depends_only_on_seed_kind_and_index(worlds, tmp_path):
    # Made alone, out of order, corpus video 5 is the world's corpus video 5.
    world = worlds["a"]
    (tmp_path / "corpus" / "videos" / "000").mkdir(parents=True)
    row = make_item(make_recipe(tmp_path, 0, TINY, Look()), "corpus", 5)
    np.testing.assert_array_equal(read_all_frames(tmp_path / "corpus" / row["path"]),
                                  read_all_frames(world.corpus_videos[5]))


def test_another_seed_gives_another_world(worlds):
    a, c = worlds["a"], worlds["c"]
    assert not np.array_equal(read_all_frames(a.corpus_videos[0]), read_all_frames(c.corpus_videos[0]))
    first = next(iter(sorted(a.objects_train.rglob("*.png"))))
    same = c.objects_train / first.relative_to(a.objects_train)
    assert not np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(same)))
    assert (a.root / "corpus/hidden_meta.csv").read_bytes() != (c.root / "corpus/hidden_meta.csv").read_bytes()


def test_hmdb_split_files_are_well_formed(worlds):
    world = worlds["a"]
    assignments = {1: {}, 2: {}, 3: {}}
    for action in world.action_classes:
        on_disk = sorted(p.name for p in (world.actions_videos / action).glob("*.mp4"))
        assert len(on_disk) == TINY.action_videos_per_class
        for split in (1, 2, 3):
            lines = (world.actions_splits / f"{action}_test_split{split}.txt").read_text().splitlines()
            pairs = [line.split(" ") for line in lines]
            assert all(len(p) == 2 and p[1] in ("0", "1", "2") for p in pairs), lines
            assert sorted(name for name, _ in pairs) == on_disk
            ids = [int(i) for _, i in pairs]
            assert ids.count(1) == TINY.split_train and ids.count(2) == TINY.split_test
            assignments[split][action] = ids
    assert assignments[1] != assignments[2] and assignments[2] != assignments[3]
    assert len(list(world.actions_splits.iterdir())) == 3 * len(world.action_classes)


def test_hidden_labels_list_every_corpus_video(worlds):
    world = worlds["a"]
    with world.hidden_labels.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "label"]
    listed = {world.corpus_dir / path for path, _ in rows[1:]}
    assert listed == set(world.corpus_dir.rglob("*.mp4")) == set(world.corpus_videos)
    classes = (world.corpus_dir / "hidden_classes.txt").read_text().split()
    assert classes == world.corpus_classes
    # The actions (sorted), then BACKGROUND for the uncurated videos that show no object.
    assert classes[:len(world.action_classes)] == world.action_classes == sorted(world.action_classes)
    assert classes[len(world.action_classes):] in ([], [BACKGROUND])
    assert [world.corpus_classes[i] for i in world.corpus_labels] == [label for _, label in rows[1:]]


def test_an_action_is_a_motion_of_an_object_group(worlds):
    world = worlds["a"]
    group_of = {c.name: c.group for c in OBJECT_CLASSES}
    for meta in ("actions/meta.csv", "corpus/hidden_meta.csv"):
        with (world.root / meta).open() as f:
            for row in csv.DictReader(f):
                if row["action"] == BACKGROUND:  # uncurated corpus footage: no object at all
                    assert meta.startswith("corpus") and not row["object"] and not row["motion"]
                    continue
                assert row["action"] == f"{row['motion']}_{row['group']}"
                assert group_of[row["object"]] == row["group"]
                assert row["motion"] in world.motions and row["scene"] in world.scene_classes


def test_manifest_describes_the_files(worlds):
    world = load_world(worlds["a"].root)
    assert (world.seed, world.size, world.frame_size, world.fps) == (0, "tiny", 32, TINY.fps)
    assert world.params == TINY
    assert len(world.motions) == TINY.n_motions and len(world.action_classes) == 4 * TINY.n_motions
    # Class lists are in ImageFolder order (sorted folder names).
    assert world.object_classes == sorted(p.name for p in world.objects_train.iterdir())
    assert world.scene_classes == sorted(p.name for p in world.scenes_test.iterdir())
    assert len(list(world.objects_test.rglob("*.png"))) == world.counts["object_test"] == 16 * TINY.object_test_per_class
    assert Image.open(next(world.scenes_train.rglob("*.png"))).size == (32, 32)
    frames = read_all_frames(world.corpus_videos[0])
    assert frames.shape == (TINY.frames_per_video, 32, 32, 3)
    assert world.bytes_on_disk > 0 and world.seconds > 0
    assert "12 videos" in world.summary()


def test_generation_is_idempotent_and_refuses_another_world(worlds):
    root = worlds["a"].root
    stamp = (root / "world.json").stat().st_mtime_ns
    start = time.perf_counter()
    again = generate_world(root, seed=0, size="tiny")
    assert time.perf_counter() - start < 1.0
    assert (root / "world.json").stat().st_mtime_ns == stamp
    assert again.corpus_videos == worlds["a"].corpus_videos
    with pytest.raises(WorldError, match="another world"):
        generate_world(root, seed=7, size="tiny")


def test_interrupted_generation_is_redone_but_foreign_folders_are_kept(tmp_path):
    crashed = tmp_path / "crashed"
    (crashed / "objects" / "junk").mkdir(parents=True)
    (crashed / ".synth_in_progress").write_text("")
    world = generate_world(crashed, seed=0, size=TINY, workers=1)
    assert not (crashed / "objects" / "junk").exists() and not (crashed / ".synth_in_progress").exists()
    assert len(world.corpus_videos) == TINY.corpus_videos

    foreign = tmp_path / "foreign"
    (foreign / "actions").mkdir(parents=True)
    with pytest.raises(WorldError, match="not a world"):
        generate_world(foreign, seed=0, size="tiny")
    assert (foreign / "actions").is_dir()


def test_load_world_reports_missing_or_broken_worlds(worlds, tmp_path):
    with pytest.raises(WorldError, match="no world.json"):
        load_world(tmp_path)
    (tmp_path / "world.json").write_text("{not json")
    with pytest.raises(WorldError, match="not valid JSON"):
        load_world(tmp_path)
    manifest = json.loads((worlds["c"].root / "world.json").read_text())
    del manifest["action_classes"]
    (tmp_path / "world.json").write_text(json.dumps(manifest))
    with pytest.raises(WorldError, match="incomplete or malformed"):
        load_world(tmp_path)


def test_load_world_notices_a_deleted_video(worlds):
    world = worlds["c"]
    video = world.corpus_videos[3]
    saved = video.read_bytes()
    video.unlink()
    try:
        with pytest.raises(WorldError, match="corpus video .* is missing"):
            load_world(world.root)
    finally:
        video.write_bytes(saved)


def test_cli_writes_world_and_preview(tmp_path, capsys):
    out, png = tmp_path / "world", tmp_path / "preview.png"
    code = synth_main([str(out), "--seed", "3", "--size", "tiny", "--workers", "1", "--quiet",
                       "--preview", str(png)])
    assert code == 0
    assert load_world(out).seed == 3
    assert "seed 3, size tiny" in capsys.readouterr().out
    image = Image.open(png)
    # 2 still rows + one row per motion, tiles 96 px wide: 16 object stills side by side.
    assert image.width > 16 * 96 and image.height > (2 + TINY.n_motions) * 96
    assert len(set(np.asarray(image.convert("L")).ravel().tolist())) > 50  # a picture, not a blank

    # Through the `distinit` dispatcher, a user error is one message and exit status 2.
    assert cli.main(["synth", str(out), "--seed", "4", "--size", "tiny", "--quiet"]) == 2
    assert "another world" in capsys.readouterr().err
