"""Which videos a run saw (`distinit.data.corpus.record`): the fingerprint, the manifest of a prepared
folder, the "corpus" record of results.json, and the warning tables and `fuse` print when runs
read different videos."""

import json
import shutil

import pytest
import torch

from distinit.cli import main
from distinit.data.corpus.record import (
    comparability,
    corpus_record,
    describe,
    find_manifest,
    fingerprint,
)
from distinit.data.video.io import list_videos
from distinit.experiments import tables
from distinit.jobs.evaluate import PREDICTIONS

SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=36",
         "data.crop=32", "data.num_workers=0", "data.num_test_clips=2", "optim.batch_size=4",
         "optim.epochs=1", "log_every=1"]


def _files(tmp_path, sizes: dict[str, int]):
    for name, n in sizes.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * n)
    return [tmp_path / name for name in sizes]


def test_the_fingerprint_is_the_sorted_relative_paths_and_sizes(tmp_path):
    import hashlib

    videos = _files(tmp_path, {"b/2.mp4": 5, "a/1.mp4": 3})
    lines = "a/1.mp4\t3\nb/2.mp4\t5\n"
    expected = "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    assert fingerprint(videos, tmp_path) == expected
    assert fingerprint(videos[::-1], tmp_path) == expected  # the order of the list is not in it
    assert fingerprint(videos, tmp_path) == fingerprint(videos, tmp_path)  # stable
    # Without a root (or outside it) the path is as given.
    assert fingerprint(videos) == "sha256:" + hashlib.sha256(
        "".join(sorted(f"{v.as_posix()}\t{n}\n" for v, n in zip(videos, (5, 3)))).encode()
    ).hexdigest()
    assert fingerprint(videos, tmp_path / "elsewhere") == fingerprint(videos)


def test_the_fingerprint_changes_when_a_video_changes_size_or_is_removed(tmp_path):
    videos = _files(tmp_path, {"a.mp4": 3, "b.mp4": 5, "c.mp4": 7})
    before = fingerprint(videos, tmp_path)
    videos[1].write_bytes(b"x" * 6)
    resized = fingerprint(videos, tmp_path)
    assert resized != before
    videos[1].write_bytes(b"x" * 5)
    assert fingerprint(videos, tmp_path) == before
    videos[2].unlink()
    assert fingerprint(videos, tmp_path) == fingerprint(videos[:2], tmp_path) != before
    record = corpus_record(videos, tmp_path, missing=[tmp_path / "gone.mp4"])
    assert record["videos"] == 2 and record["missing"] == 2  # listed-but-absent and unreadable


def test_a_frame_folder_counts_the_sum_of_its_files(tmp_path):
    _files(tmp_path, {"v/frame_1.png": 4, "v/frame_2.png": 6})
    import hashlib

    assert fingerprint([tmp_path / "v"], tmp_path) == (
        "sha256:" + hashlib.sha256(b"v\t10\n").hexdigest())


def _manifest(folder, **extra) -> dict:
    data = {"created_by": "distinit prepare", "dataset": "toy", "videos": 6, "missing": 1,
            "fingerprint": "sha256:" + "ab" * 32, **extra}
    (folder / "manifest.json").write_text(json.dumps(data))
    return data


def test_find_manifest_looks_in_each_folder_and_its_parent(tmp_path, capsys):
    out = tmp_path / "prepared"
    (out / "videos").mkdir(parents=True)
    (out / "splits").mkdir()
    (out / "splits" / "train.csv").write_text("path,label\n")
    assert find_manifest(out / "videos") is None
    _manifest(out)
    assert find_manifest(out / "videos") == out / "manifest.json"
    assert find_manifest(None, "", out / "splits" / "train.csv") == out / "manifest.json"
    assert find_manifest(tmp_path / "other") is None
    # Another tool's manifest.json is not ours; one that does not parse is said and ignored.
    (out / "manifest.json").write_text(json.dumps({"created_by": "someone else"}))
    assert find_manifest(out / "videos") is None
    capsys.readouterr()
    (out / "manifest.json").write_text("{not json")
    assert find_manifest(out / "videos") is None
    assert "manifest.json is not readable JSON" in capsys.readouterr().out


@pytest.fixture(scope="module")
def prepared(world, tmp_path_factory):
    """A folder as `distinit prepare` writes it: manifest.json, labels.txt, videos/, splits/
    (two of the world's actions, two training and one test video each)."""
    out = tmp_path_factory.mktemp("prepared")
    classes = sorted(world.action_classes)[:2]
    rows = {"train": [], "test": []}
    for c in classes:
        (out / "videos" / c).mkdir(parents=True)
        for i, v in enumerate(sorted((world.actions_videos / c).glob("*.mp4"))[:3]):
            shutil.copy(v, out / "videos" / c / v.name)
            rows["train" if i < 2 else "test"].append(f"{c}/{v.name},{c}\n")
    (out / "splits").mkdir()
    for subset, lines in rows.items():
        (out / "splits" / f"{subset}.csv").write_text("path,label\n" + "".join(lines))
    (out / "labels.txt").write_text("".join(f"{c}\n" for c in classes))
    (out / "splits" / "labels.txt").write_text("".join(f"{c}\n" for c in classes))
    manifest = _manifest(out, fingerprint=fingerprint(list_videos(out / "videos"), out / "videos"))
    data = ["data.format=csv", f"data.split_dir={out / 'splits'}",
            f"data.video_root={out / 'videos'}"]
    return out, data, manifest


def test_finetune_and_eval_record_the_corpus_and_its_manifest(prepared, tmp_path):
    out, data, manifest = prepared
    assert main(["finetune", *SMALL, *data, f"out_dir={tmp_path / 'ft'}"]) == 0
    result = json.loads((tmp_path / "ft" / "results.json").read_text())
    corpus = result["corpus"]
    assert set(corpus) == {"train", "test"}
    assert (corpus["train"]["videos"], corpus["test"]["videos"]) == (4, 2)
    assert corpus["train"]["missing"] == corpus["test"]["missing"] == 0
    test_videos = sorted((out / "videos").glob("*/*.mp4"))[2::3]
    assert corpus["test"]["fingerprint"] == fingerprint(test_videos, out / "videos")
    recorded = corpus["train"]["manifest"]
    assert recorded == {"path": str(out / "manifest.json"), "fingerprint": manifest["fingerprint"],
                        "videos": 6, "missing": 1, "dataset": "toy"}
    assert result["classes"] == (out / "labels.txt").read_text().split()  # kept beside it

    assert main(["eval", *SMALL, *data, f"model.weights={tmp_path / 'ft' / 'last.pt'}",
                 f"out_dir={tmp_path / 'ev'}"]) == 0
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert ev["corpus"] == {"test": corpus["test"]}
    # A second run over the same files records the same fingerprint.
    assert main(["eval", *SMALL, *data, f"model.weights={tmp_path / 'ft' / 'last.pt'}",
                 f"out_dir={tmp_path / 'ev'}", "--overwrite"]) == 0
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["corpus"] == ev["corpus"]


def test_a_pretraining_records_the_videos_it_read(world, teacher_file, tmp_path):
    argv = ["distill", *SMALL, f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]',
            f"data.videos={world.corpus_dir}", "optim.epoch_size=8", f"out_dir={tmp_path / 'd'}"]
    assert main(argv) == 0
    corpus = json.loads((tmp_path / "d" / "results.json").read_text())["corpus"]
    videos = list_videos(world.corpus_dir)
    assert corpus["videos"] == len(videos) and corpus["missing"] == 0
    assert corpus["fingerprint"] == fingerprint(videos, world.corpus_dir)
    assert corpus["manifest"] is None


def _record(fp: str, n: int = 4) -> dict:
    return {"videos": n, "fingerprint": "sha256:" + fp * 64, "missing": 0, "manifest": None}


def test_tables_show_the_corpus_and_warn_when_runs_read_different_videos():
    same = {"train": _record("a"), "test": _record("b", 2)}
    other = {"train": _record("a"), "test": _record("c", 2)}
    assert describe(same) == "train aaaaaaaaaaaa 4 (0), test bbbbbbbbbbbb 2 (0)"
    assert tables.corpus_lines({"x": same, "y": same}) == [
        "Corpus (fingerprint, videos (missing)): train aaaaaaaaaaaa 4 (0), test bbbbbbbbbbbb "
        "2 (0)."]
    lines = tables.corpus_lines({"x": same, "y": other, "old run": None})
    assert len(lines) == 1 and lines[0].startswith("warning: rows 'x' and 'y' read different "
                                                   "test videos")
    assert "not comparable" in lines[0]
    # What a pretraining read is what an experiment varies: shown, not warned about.
    pre = [{**same, "pretrain": _record(c, 10)} for c in "de"]
    assert comparability({"x": pre[0], "y": pre[1]}, skip=("pretrain",)) is None
    assert tables.corpus_lines({"x": pre[0], "y": pre[1]})[0].startswith("Corpus")

    exp = type("Exp", (), {"claims": [], "paper": "p", "what": "w"})()
    results = {v: [{"top1": 50.0, "corpus": c}] for v, c in (("A", pre[0]), ("B", other))}
    table = tables.summarize("x", exp, {}, results, [0], 1.0)
    table["student"] = "Res3D"
    text = tables.markdown(table, "distinit reproduce x")
    assert "| pretraining corpus |" in text and "dddddddddddd 10 (0)" in text
    assert "warning: variants 'A, seed 0' and 'B, seed 0' read different test videos" in text


def test_fuse_warns_when_runs_read_different_videos(tmp_path, capsys):
    for name, fp in (("rgb", "a"), ("flow", "b")):
        run = tmp_path / name
        run.mkdir()
        torch.save({"probs": torch.eye(2), "labels": torch.tensor([0, 1]),
                    "videos": ["v0", "v1"], "classes": ["x", "y"]}, run / PREDICTIONS)
        (run / "results.json").write_text(json.dumps({"corpus": {"test": _record(fp, 2)}}))
    capsys.readouterr()
    assert main(["fuse", str(tmp_path / "rgb"), str(tmp_path / "flow")]) == 0
    out = capsys.readouterr().out
    assert f"warning: runs '{tmp_path / 'rgb'}' and '{tmp_path / 'flow'}' read different test " \
           "videos" in out


def test_a_split_records_the_videos_it_lists_that_are_not_on_disk(tmp_path):
    from types import SimpleNamespace

    from distinit.data.corpus.record import labeled_corpus

    videos = _files(tmp_path / "videos", {"a/1.mp4": 3, "a/2.mp4": 4})
    dc = SimpleNamespace(video_root=str(tmp_path / "videos"), split_dir=str(tmp_path / "splits"))
    split = SimpleNamespace(videos=videos, missing=[tmp_path / "videos" / "a" / "3.mp4"])
    record = labeled_corpus(dc, test=split)
    assert list(record) == ["test"]
    assert (record["test"]["videos"], record["test"]["missing"]) == (2, 1)
    assert record["test"]["fingerprint"] == fingerprint(videos, tmp_path / "videos")
