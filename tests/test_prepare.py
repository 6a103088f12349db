"""`distinit prepare`: tiny copies of each official layout, from real encoded videos, prepared
and then fine-tuned and evaluated on; resuming, re-running, and the bad inputs.

No program here writes RAR (only RarLab's `rar` does), so the HMDB-51 archives are built as ZIPs
under the official stems: prepare reads an archive's kind from its bytes, and RAR reading itself
is tested on real RAR files in test_archives.py.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from distinit.cli import main
from distinit.data.labels import prepare as prep
from distinit.data.labels.splits import load_labeled
from distinit.data.video.io import list_videos, probe
from distinit.errors import UserError

SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=36",
         "data.crop=32", "data.num_workers=0", "data.num_test_clips=2", "optim.batch_size=4",
         "optim.epochs=1", "log_every=1"]
# Split-file order would put climb_stairs before climb; labels are alphabetical.
HMDB_CLASSES = ("climb_stairs", "brush_hair", "climb")
UCF_CLASSES = ("ApplyEyeMakeup", "Basketball", "YoYo")


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def hmdb_download(root: Path, make_video, drop: str | None = None) -> Path:
    """hmdb51_org.<zip> of per-class archives and test_train_splits.<zip>, as distributed:
    per class, videos 0-1 train (id 1), 2 test (id 2), 3 unused (id 0); CRLF and the trailing
    space the official lines have. `drop` names a listed video left out of the archive."""
    src = root / "download"
    src.mkdir(parents=True)
    outer, splits = {}, {}
    for c in HMDB_CLASSES:
        names = [f"{c}_v{i}.avi" for i in range(4)]
        videos = {f"{c}/{n}": make_video(n[:-4], "avi", folder=root / "raw" / c).read_bytes()
                  for n in names if n != drop}
        outer[f"{c}.rar"] = _zip_bytes(videos)  # the official per-class names (bytes: ZIP)
        for s in (1, 2, 3):
            ids = (1, 1, 2, 0) if s == 1 else (1, 2, 1, 0)
            lines = "".join(f"{n} {i} \r\n" for n, i in zip(names, ids))
            splits[f"testTrainMulti_7030_splits/{c}_test_split{s}.txt"] = lines.encode()
    (src / "hmdb51_org.zip").write_bytes(_zip_bytes(outer))
    (src / "test_train_splits.zip").write_bytes(_zip_bytes(splits))
    return src


def ucf_download(root: Path, make_video) -> Path:
    """UCF-101 unpacked already (UCF-101/<Class>/v_*.avi) and the split ZIP as distributed."""
    src = root / "download"
    lists = {"classInd.txt": "".join(f"{i} {c}\r\n" for i, c in enumerate(UCF_CLASSES, 1))}
    for s in (1, 2, 3):
        train, test = [], []
        for i, c in enumerate(UCF_CLASSES, 1):
            for g in range(3):
                name = f"v_{c}_g0{g + 1}_c01.avi"
                if s == 1:
                    make_video(name[:-4], "avi", folder=src / "UCF-101" / c)
                if g == s % 3:
                    test.append(f"{c}/{name}")
                else:
                    train.append(f"{c}/{name} {i}")
        lists[f"trainlist0{s}.txt"] = "".join(f"{line}\r\n" for line in train)
        lists[f"testlist0{s}.txt"] = "".join(f"{line}\r\n" for line in test)
    (src / "UCF101TrainTestSplits-RecognitionTask.zip").write_bytes(
        _zip_bytes({f"ucfTrainTestlist/{k}": v.encode() for k, v in lists.items()}))
    return src


def test_hmdb51_from_the_archives_to_finetune_and_eval(tmp_path, make_video, capsys):
    src, out = hmdb_download(tmp_path, make_video), tmp_path / "hmdb51"
    assert main(["prepare", "hmdb51", str(src), str(out), "--workers", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (out / "labels.txt").read_text().split() == sorted(HMDB_CLASSES)
    assert manifest["classes"] == 3 and manifest["listed"] == 9  # id 0 (unused) is not listed
    assert manifest["videos"] == 9 and manifest["missing"] == manifest["undecodable"] == 0
    train = manifest["splits"]["1"]["train"]
    assert train["videos"] == 6 and train["per_class"] == dict.fromkeys(sorted(HMDB_CLASSES), 2)
    assert manifest["splits"]["1"]["test"]["videos"] == 3
    assert manifest["seconds"] == pytest.approx(9 * 24 / 25, abs=0.1)
    assert manifest["fingerprint"].startswith("sha256:")
    assert (out / "splits" / "climb_test_split1.txt").read_bytes().endswith(b" \r\n")
    assert "data.format=hmdb51" in capsys.readouterr().out
    # A drop-in for the official layout: the loaders read it as they read the original.
    split = load_labeled("hmdb51", out / "videos", out / "splits", 1, "train")
    assert split.classes == sorted(HMDB_CLASSES) and len(split.samples) == 6

    data = ["data.format=hmdb51", f"data.video_root={out / 'videos'}",
            f"data.split_dir={out / 'splits'}"]
    assert main(["finetune", *SMALL, *data, f"out_dir={tmp_path / 'ft'}"]) == 0
    assert main(["eval", *SMALL, *data, f"model.weights={tmp_path / 'ft' / 'last.pt'}",
                 f"out_dir={tmp_path / 'ev'}"]) == 0
    result = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert result["classes"] == sorted(HMDB_CLASSES) and 0 <= result["top1"] <= 100
    assert result["corpus"]["test"]["manifest"]["fingerprint"] == manifest["fingerprint"]


def test_a_second_run_only_checks_from_its_record(tmp_path, make_video, monkeypatch, capsys):
    src, out = hmdb_download(tmp_path, make_video), tmp_path / "hmdb51"
    first = prep.prepare("hmdb51", src, out)

    def decode(*_):
        raise AssertionError("a finished OUT is checked from its record, not decoded again")

    monkeypatch.setattr(prep, "inspect_video", decode)
    assert prep.prepare("hmdb51", src, out) == first
    # A video that changed is decoded again, and a broken one is recorded with its reason.
    monkeypatch.undo()
    (out / "videos" / "climb" / "climb_v0.avi").write_bytes(b"not a video at all")
    again = prep.prepare("hmdb51", src, out)
    assert again["undecodable"] == 1 and "climb/climb_v0.avi" in again["problems"]
    assert again["fingerprint"] != first["fingerprint"]


def test_an_interrupted_prepare_continues_to_the_same_result(tmp_path, make_video, monkeypatch):
    src = hmdb_download(tmp_path, make_video)
    clean = prep.prepare("hmdb51", src, tmp_path / "clean")
    placed = []
    real_place = prep._place

    def crash_after_four(path, dst, link, state):
        if len(placed) == 4:
            raise KeyboardInterrupt
        placed.append(dst)
        real_place(path, dst, link, state)

    monkeypatch.setattr(prep, "_place", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare("hmdb51", src, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()
    monkeypatch.undo()
    resumed = prep.prepare("hmdb51", src, tmp_path / "out")
    assert resumed["fingerprint"] == clean["fingerprint"]
    assert resumed["splits"] == clean["splits"]


def test_ucf101_unpacked_videos_reencoded_under_their_split_names(tmp_path, make_video):
    src, out = ucf_download(tmp_path, make_video), tmp_path / "ucf101"
    assert main(["prepare", "ucf101", str(src), str(out), "--short-side", "128",
                 "--workers", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["videos"] == 9 and manifest["options"]["short_side"] == 128
    video = out / "videos" / "YoYo" / "v_YoYo_g01_c01.avi"  # the name the split file lists
    info = probe(video)
    assert (info.height, info.width) == (128, 170) and info.num_frames == 24
    assert (out / "labels.txt").read_text().split() == list(UCF_CLASSES)
    for s in (1, 2, 3):
        for subset in ("train", "test"):
            load_labeled("ucf101", out / "videos", out / "splits", s, subset)
    data = ["data.format=ucf101", f"data.video_root={out / 'videos'}",
            f"data.split_dir={out / 'splits'}", "data.split=2"]
    assert main(["finetune", *SMALL, *data, f"out_dir={tmp_path / 'ft'}"]) == 0
    assert main(["eval", *SMALL, *data, f"model.weights={tmp_path / 'ft' / 'last.pt'}",
                 f"out_dir={tmp_path / 'ev'}"]) == 0


def test_a_split_naming_a_video_not_in_the_archive_is_one_line(tmp_path, make_video, capsys):
    src = hmdb_download(tmp_path, make_video, drop="climb_v2.avi")
    assert main(["prepare", "hmdb51", str(src), str(tmp_path / "out"), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not in" in err and "climb/climb_v2.avi" in err
    assert not (tmp_path / "out" / "manifest.json").exists()  # not a finished OUT


@pytest.mark.parametrize("case", ["truncated", "no download", "inside the source"])
def test_bad_downloads_are_one_line(tmp_path, make_video, capsys, case):
    src = hmdb_download(tmp_path, make_video)
    out = tmp_path / "out"
    if case == "truncated":
        data = (src / "hmdb51_org.zip").read_bytes()
        (src / "hmdb51_org.zip").write_bytes(data[: len(data) // 2])
        expected = "truncated or corrupt"
    elif case == "no download":
        src = tmp_path / "empty"
        src.mkdir()
        expected = "test_train_splits.rar"
    else:
        out = src / "prepared"
        expected = "overlap"
    assert main(["prepare", "hmdb51", str(src), str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expected in err, err
    assert not (out / "manifest.json").exists()


def test_prepare_refuses_a_listed_video_it_cannot_place_without_losing_work(tmp_path,
                                                                            make_video):
    src = hmdb_download(tmp_path, make_video, drop="brush_hair_v0.avi")
    with pytest.raises(UserError, match="1 videos the split files list"):
        prep.prepare("hmdb51", src, tmp_path / "out")
    # Everything unpacked and placed so far stays, for the run after the download is fixed.
    assert len(list((tmp_path / "out" / "videos").rglob("*.avi"))) == 8


def kinetics_download(root: Path, make_video) -> Path:
    """kinetics400.tar.gz of the annotation CSVs as distributed (CRLF, quoted labels with
    spaces, the is_cc column) and a downloader's clips in train/ and val/, one never downloaded."""
    import tarfile

    src = root / "download"
    classes = ("zumba", "air drumming", "abseiling")
    train, val = [], []
    for c, label in enumerate(classes):
        for i in range(3):
            youtube_id, start = f"id{c}{i}xxxxxx", 10 * i
            line = f'"{label}",{youtube_id},{start},{start + 10},{"train" if i < 2 else "val"},0'
            (train if i < 2 else val).append(line)
            if (c, i) != (1, 0):  # one clip left YouTube
                make_video(f"{youtube_id}_{start:06d}_{start + 10:06d}",
                           folder=src / "clips" / ("train" if i < 2 else "val"))
    header = "label,youtube_id,time_start,time_end,split,is_cc"
    csvs = root / "k400" / "kinetics400"
    csvs.mkdir(parents=True)
    for name, lines in (("train.csv", train), ("validate.csv", val)):
        (csvs / name).write_bytes("".join(f"{x}\r\n" for x in [header, *lines]).encode())
    with tarfile.open(src / "kinetics400.tar.gz", "w:gz") as archive:
        archive.add(csvs, arcname="kinetics400")
    return src


def test_kinetics_from_the_csvs_and_clips_to_finetune_and_eval(tmp_path, make_video, capsys):
    src, out = kinetics_download(tmp_path, make_video), tmp_path / "k400"
    assert main(["prepare", "kinetics", str(src), str(out), "--videos", str(src / "clips"),
                 "--workers", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (out / "labels.txt").read_text().splitlines() == ["abseiling", "air drumming", "zumba"]
    assert manifest["listed"] == 9 and manifest["videos"] == 8 and manifest["missing"] == 1
    assert list(manifest["problems"]) == ["id10xxxxxx_000000_000010.mp4"]
    assert manifest["splits"]["1"]["train"]["per_class"] == {
        "abseiling": 2, "air drumming": 1, "zumba": 2}
    assert "data.format=kinetics_csv" in capsys.readouterr().out
    # The training clips as an unlabeled corpus (data.videos), the missing one left out.
    train = list_videos(out / "lists" / "train_split1.txt")
    assert len(train) == 5 and all(v.is_file() for v in train)

    data = ["data.format=kinetics_csv", f"data.video_root={out / 'videos'}",
            f"data.split_dir={out / 'splits'}"]
    assert main(["finetune", *SMALL, *data, f"out_dir={tmp_path / 'ft'}"]) == 0
    tuned = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert tuned["corpus"]["train"]["videos"] == 5 and tuned["corpus"]["train"]["missing"] == 1
    assert tuned["corpus"]["train"]["manifest"]["fingerprint"] == manifest["fingerprint"]
    assert main(["eval", *SMALL, *data, f"model.weights={tmp_path / 'ft' / 'last.pt'}",
                 f"out_dir={tmp_path / 'ev'}"]) == 0
    result = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert result["classes"] == ["abseiling", "air drumming", "zumba"]
    assert result["corpus"]["test"]["videos"] == 3 and result["corpus"]["test"]["missing"] == 0


def test_a_rawframe_set_with_flow_beside_it_to_finetune_and_eval(tmp_path, make_video):
    """MMAction2's rawframes: <class>/<video>/img_00001.jpg with flow_x_/flow_y_ images in the
    same folder, and its `path num_frames label` lists; only the RGB frames are read."""
    from PIL import Image

    from distinit.data.video.io import read_all_frames

    root, lists = tmp_path / "rawframes", tmp_path / "lists"
    lines = {"train": [], "test": []}
    for label, c in enumerate(("brush_hair", "climb")):
        for i in range(3):
            frames = read_all_frames(make_video(f"{c}{i}", folder=tmp_path / "src"))
            folder = root / c / f"{c}{i}"
            folder.mkdir(parents=True)
            for t, frame in enumerate(frames, 1):
                Image.fromarray(frame).save(folder / f"img_{t:05d}.jpg")
                for axis in "xy":  # flow as a flat gray image: never an RGB frame
                    Image.fromarray(frame[..., 0] * 0 + 128).save(folder / f"flow_{axis}_{t:05d}.jpg")
            lines["train" if i < 2 else "test"].append(f"{c}/{c}{i} {len(frames)} {label}\n")
    lists.mkdir()
    for subset, rows in lines.items():
        (lists / f"{subset}.txt").write_text("".join(rows))
    (lists / "labels.txt").write_text("brush_hair\nclimb\n")
    data = ["data.format=list", f"data.video_root={root}", f"data.split_dir={lists}",
            "data.frame_template=img_{:05d}.jpg"]
    assert main(["finetune", *SMALL, *data, f"out_dir={tmp_path / 'ft'}"]) == 0
    assert main(["eval", *SMALL, *data, f"model.weights={tmp_path / 'ft' / 'last.pt'}",
                 f"out_dir={tmp_path / 'ev'}"]) == 0
    result = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert result["classes"] == ["brush_hair", "climb"] and result["corpus"]["test"]["videos"] == 2
    # The frames a run decodes are the RGB ones: 24 of the 72 images of a folder.
    assert len(read_all_frames(root / "climb" / "climb0", frame_template="img_{:05d}.jpg")) == 24
