"""The labeled-data formats other tools' users keep (issue 27): the official Kinetics CSVs
(`kinetics_csv`), `path label` lists (`list`), and MMAction2's rawframe folders, whose flow
images sit beside the RGB frames (`data.frame_template`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distinit.build import clip_dataset, labeled_split
from distinit.config import ConfigError, load_config
from distinit.data.labels.splits import SplitError, dataset_classes, load_labeled
from distinit.data.video.frame_folders import FrameTemplateError, frame_files
from distinit.data.video.frames import frame_source
from distinit.data.video.io import probe, read_all_frames, read_frames

FINETUNE = Path(__file__).parent.parent / "configs" / "finetune_hmdb51.yaml"
HEADER = "label,youtube_id,time_start,time_end,split"
TEMPLATE = "img_{:05d}.jpg"


def one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def write_csv(path: Path, lines: list[str], header: str = HEADER) -> Path:
    # The official files end their lines with CRLF.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join([header, *lines]) + "\r\n").encode())
    return path


def frame_folder(folder: Path, rgb: list[int], flow: int | None = None,
                 names: str = "img_{:05d}.jpg", flow_names=("flow_x_{:05d}.jpg",
                                                            "flow_y_{:05d}.jpg")) -> Path:
    """JPEG frames of uniform gray levels `rgb`, and flow images of level `flow` beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, level in enumerate(rgb, 1):
        Image.fromarray(np.full((24, 32, 3), level, np.uint8)).save(folder / names.format(i))
        if flow is not None:
            for name in flow_names:
                Image.fromarray(np.full((24, 32, 3), flow, np.uint8)).save(folder / name.format(i))
    return folder


# ---- kinetics_csv -------------------------------------------------------------------------------

@pytest.fixture
def kinetics(tmp_path, make_video):
    """train.csv: 3 classes, 4 clips, one not downloaded; validate.csv: 2 clips, one missing."""
    root, ann = tmp_path / "k400", tmp_path / "annotations"
    for name in ("aaa_000014_000024", "bbb_000000_000010", "ccc_000005_000015",
                 "eee_000001_000011"):
        make_video(name=name, folder=root, num_frames=12)
    write_csv(ann / "train.csv", ["abseiling,aaa,14,24,train", '"air drumming",bbb,0,10,train',
                                  "zumba,ccc,5.0,15.0,train", "abseiling,ddd,30,40,train"])
    write_csv(ann / "validate.csv", ["zumba,eee,1,11,val", "abseiling,fff,2,12,val"])
    return root, ann


def test_kinetics_labels_index_sorted_classes_and_missing_clips_are_noted(kinetics, capsys):
    root, ann = kinetics
    train = load_labeled("kinetics_csv", root, ann, subset="train")
    assert train.classes == ["abseiling", "air drumming", "zumba"]
    assert train.samples == [(root / "aaa_000014_000024.mp4", 0), (root / "bbb_000000_000010.mp4", 1),
                             (root / "ccc_000005_000015.mp4", 2)]
    assert train.missing == [root / "ddd_000030_000040.mp4"]
    out = capsys.readouterr().out
    assert out == (f"note: 1 of 4 clips listed in {ann / 'train.csv'} are not in {root}; "
                   f"the run reads the other 3\n")
    # The test subset reads validate.csv, against the training classes.
    test = load_labeled("kinetics_csv", root, ann, subset="test")
    assert test.samples == [(root / "eee_000001_000011.mp4", 2)]
    assert test.missing == [root / "fff_000002_000012.mp4"]
    assert "note: 1 of 2 clips listed in" in capsys.readouterr().out
    # val.csv when there is no validate.csv; Kinetics-400's older files add is_cc.
    (ann / "validate.csv").rename(ann / "val.csv")
    write_csv(ann / "train.csv", ["abseiling,aaa,14,24,train,0", "zumba,ccc,5,15,train,1"],
              header=HEADER + ",is_cc")
    test = load_labeled("kinetics_csv", root, ann, subset="test")
    assert test.classes == ["abseiling", "zumba"] and test.labels == [1]


def test_kinetics_per_class_folders_and_labels_txt(tmp_path, make_video, capsys):
    root, ann = tmp_path / "k", tmp_path / "ann"
    make_video(name="aaa_000014_000024", folder=root / "air drumming")
    make_video(name="bbb_000000_000010", folder=root / "zumba")
    write_csv(ann / "train.csv", ["air drumming,aaa,14,24,train", "zumba,bbb,0,10,train"])
    write_csv(ann / "validate.csv", ["zumba,bbb,0,10,val"])
    template = "{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"
    split = load_labeled("kinetics_csv", root, ann, subset="train", name_template=template)
    assert split.videos == [root / "air drumming/aaa_000014_000024.mp4",
                            root / "zumba/bbb_000000_000010.mp4"] and split.missing == []
    assert capsys.readouterr().out == ""  # nothing missing: no note
    # Folders renamed with underscores (MMAction2's rename_classnames.sh), and a labels.txt
    # whose order, and spelling, wins.
    (root / "air drumming").rename(root / "air_drumming")
    (ann / "labels.txt").write_text("zumba\nair_drumming\nyoga\n")
    split = load_labeled("kinetics_csv", root, ann, subset="train", name_template=template.replace(
        "{label}", "{label_underscored}"))
    assert split.classes == ["zumba", "air_drumming", "yoga"]
    assert split.samples == [(root / "air_drumming/aaa_000014_000024.mp4", 1),
                             (root / "zumba/bbb_000000_000010.mp4", 0)]
    assert split.absent == ["yoga"]


def test_kinetics_all_clips_missing_is_one_line(kinetics):
    root, ann = kinetics
    with pytest.raises(SplitError) as info:
        load_labeled("kinetics_csv", root / "elsewhere", ann, subset="train")
    assert one_line(info) == (
        f"{ann / 'train.csv'}: none of the 4 clips it lists is in {root / 'elsewhere'} (the "
        f"first would be {root / 'elsewhere/aaa_000014_000024.mp4'}); check data.video_root and "
        f"data.name_template")


@pytest.mark.parametrize("file, header, lines, expect", [
    ("train.csv", "label,youtube_id,start,end,split", ["zumba,ccc,5,15,train"],
     "train.csv:1: in 'label,youtube_id,start,end,split': a CSV with other columns: found label, "
     "youtube_id, start, end, split; expected label, youtube_id, time_start, time_end, split (and "
     "optionally is_cc); use an official Kinetics annotation CSV, or data.format=csv or list for "
     "other lists"),
    ("train.csv", HEADER + ",views", ["zumba,ccc,5,15,train,3"],
     "a CSV with other columns: found label, youtube_id, time_start, time_end, split, views;"),
    ("train.csv", HEADER, ["abseiling,aaa,14,24,train", "Abseiling ,bbb,0,10,train"],
     "train.csv:3: in 'Abseiling ,bbb,0,10,train': class 'Abseiling ' and class 'abseiling' (line "
     "2) are one name (they differ in case, surrounding spaces or spaces for underscores, and "
     "Kinetics' folder names write spaces as underscores); spell the class one way"),
    ("train.csv", HEADER, ["air drumming,aaa,14,24,train", "air_drumming,bbb,0,10,train"],
     "train.csv:3: in 'air_drumming,bbb,0,10,train': class 'air_drumming' and class 'air drumming' "
     "(line 2) are one name"),
    ("validate.csv", HEADER, ["zumba,eee,1,11,val", "yoga,fff,2,12,val"],
     "validate.csv:3: in 'yoga,fff,2,12,val': unknown class 'yoga': not one of the 3 classes of "
     "the training subset"),
    ("train.csv", HEADER, ["zumba,ccc,5.5,15,train"],
     "train.csv:2: in 'zumba,ccc,5.5,15,train': time_start '5.5' is not a whole number of seconds"),
    ("train.csv", HEADER, ["zumba,ccc,5,train"], "expected 5 fields"),
])
def test_kinetics_bad_input_is_one_line(kinetics, file, header, lines, expect):
    root, ann = kinetics
    write_csv(ann / file, lines, header=header)
    with pytest.raises(SplitError) as info:
        load_labeled("kinetics_csv", root, ann, subset="test" if file == "validate.csv" else "train")
    assert expect in one_line(info)
    assert str(ann / file) in str(info.value)


@pytest.mark.parametrize("template, expect", [
    ("{youtube_id}_{start:06d}.mp4", "unknown field {start}"),
    ("{youtube_id}_{time_start:06s}.mp4", "Unknown format code 's'"),
    ("{label}.mp4", "it does not use {youtube_id}"),
    ("{}.mp4", "a field without a name"),
])
def test_kinetics_bad_name_template_is_one_line_naming_the_fields(kinetics, template, expect):
    root, ann = kinetics
    with pytest.raises(ConfigError) as info:
        load_labeled("kinetics_csv", root, ann, name_template=template)
    message = one_line(info)
    assert message.startswith(f"data.name_template {template!r}: {expect}")
    assert ("use the fields {youtube_id}, {time_start}, {time_end}, {label}, {label_underscored}"
            in message)


# ---- list -----------------------------------------------------------------------------------------

@pytest.fixture
def videos(tmp_path, make_video):
    root = tmp_path / "videos"
    for name in ("a", "b", "c", "my clip"):
        make_video(name=name, folder=root, num_frames=12)
    return root


def test_list_space_separated_labels_are_indices_over_both_subsets(videos, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("a.mp4 0\nmy clip.mp4 1\n")
    (lists / "test.txt").write_text(f"{videos / 'c.mp4'} 4\n")  # absolute; the highest label
    train = load_labeled("list", videos, lists, subset="train")
    assert train.classes == ["0", "1", "2", "3", "4"]
    assert train.samples == [(videos / "a.mp4", 0), (videos / "my clip.mp4", 1)]
    assert load_labeled("list", videos, lists, subset="test").samples == [(videos / "c.mp4", 4)]
    # labels.txt names the classes
    (lists / "labels.txt").write_text("jump\nrun\nswim\nskip\nwalk\n")
    assert load_labeled("list", videos, lists, subset="train").classes[:2] == ["jump", "run"]


def test_list_comma_separated_and_test_falls_back_to_val(videos, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.csv").write_text("a.mp4,0\r\nb.mp4, 2\r\n")
    (lists / "val.csv").write_text("my clip.mp4,1\n")
    assert dataset_classes("list", lists).names == ["0", "1", "2"]
    assert load_labeled("list", videos, lists, subset="train").labels == [0, 2]
    assert load_labeled("list", videos, lists, subset="test").videos == [videos / "my clip.mp4"]
    (lists / "test.txt").write_text("c.mp4 0\n")  # a test list wins over val
    assert load_labeled("list", videos, lists, subset="test").videos == [videos / "c.mp4"]


def test_list_rawframe_lines_name_frame_folders(tmp_path):
    root, lists = tmp_path / "rawframes", tmp_path / "lists"
    frame_folder(root / "jump/v 1", [40, 60, 80], flow=250)
    frame_folder(root / "run/v2", [40, 60, 80], flow=250)
    lists.mkdir()
    (lists / "train.txt").write_text("jump/v 1 3 0\nrun/v2 3 1\n")  # path num_frames label
    (lists / "val.txt").write_text("run/v2 3 1\n")
    split = load_labeled("list", root, lists, subset="train")
    assert split.samples == [(root / "jump/v 1", 0), (root / "run/v2", 1)]
    assert split.classes == ["0", "1"]


@pytest.mark.parametrize("files, expect", [
    ({"train.txt": "a.mp4 0\nx.mp4 1\ny.mp4 0\n"},
     "train.txt:2: in 'x.mp4 1': video not found: {videos}/x.mp4 (1 more videos are missing); "
     "paths are relative to {videos}; fix the path or data.video_root"),
    ({"train.txt": "a.mp4 zero\n"}, "train.txt:1: in 'a.mp4 zero': label 'zero' is not an integer"),
    ({"train.txt": "a.mp4 -1\n"}, "label -1 is negative"),
    ({"train.txt": "a.mp4\n"}, "train.txt:1: in 'a.mp4': expected 'path label'"),
    ({"train.txt": "a.mp4 0\n", "train.csv": "a.mp4,0\n"},
     "both train.csv and train.txt are there; keep the one to read"),
    ({"train.txt": "a.mp4 3\n", "labels.txt": "jump\nrun\n"},
     "train.txt:1: in 'a.mp4 3': label 3 is out of range 0..1 of the classes of"),
    ({"test.txt": "a.mp4 0\n"}, "no train.csv or train.txt for the train subset"),
])
def test_list_bad_input_is_one_line(videos, tmp_path, files, expect):
    lists = tmp_path / "lists"
    lists.mkdir()
    for name, text in files.items():
        (lists / name).write_text(text)
    (lists / "test.txt").write_text("a.mp4 0\n")
    with pytest.raises(SplitError) as info:
        load_labeled("list", videos, lists, subset="train")
    assert expect.format(videos=videos) in one_line(info)


# ---- frame folders --------------------------------------------------------------------------------

@pytest.mark.parametrize("template, flow_names", [
    (TEMPLATE, ("flow_x_{:05d}.jpg", "flow_y_{:05d}.jpg")),
    ("", ("flow_x_{:05d}.jpg", "flow_y_{:05d}.jpg")),
    ("", ("x_{:05d}.jpg", "y_{:05d}.jpg")),
])
def test_flow_images_beside_the_frames_are_not_frames(tmp_path, template, flow_names):
    levels = [30, 60, 90, 120]
    folder = frame_folder(tmp_path / "v", levels, flow=250, flow_names=flow_names)
    assert len(list(folder.iterdir())) == 12
    assert probe(folder, frame_template=template).num_frames == 4
    frames = read_all_frames(folder, frame_template=template)
    assert frames.shape == (4, 24, 32, 3)
    assert np.abs(frames.reshape(4, -1).mean(1) - levels).max() < 3  # no flow (250) frame
    assert np.abs(read_frames(folder, [3, 0], frame_template=template).mean((1, 2, 3))
                  - [120, 30]).max() < 3
    # The same through a dataset's frame source.
    source = frame_source(frame_template=template)
    assert source.num_frames(folder) == 4
    assert abs(source.frames(folder, [1])[0].mean() - 60) < 3


def test_frame_template_orders_by_number_and_takes_only_its_files(tmp_path):
    folder = frame_folder(tmp_path / "v", [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110],
                          names="img_{}.jpg")
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(folder / "img_00001.jpg")
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(folder / "thumb.jpg")
    files = frame_files(folder, "img_{}.jpg")
    assert [f.name for f in files] == [f"img_{i}.jpg" for i in range(1, 12)]
    assert [f.name for f in frame_files(folder, TEMPLATE)] == ["img_00001.jpg"]


def test_no_frame_matching_the_template_is_one_line(tmp_path, make_video):
    folder = frame_folder(tmp_path / "v", [10, 20], names="frame{:04d}.jpg")
    with pytest.raises(FrameTemplateError) as info:
        read_all_frames(folder, frame_template=TEMPLATE)
    assert one_line(info) == (f"{folder}: no frames match data.frame_template 'img_{{:05d}}.jpg' "
                              f"(found e.g. 'frame0001.jpg'); set data.frame_template to the "
                              f"frames' names")
    for bad, expect in [("img.jpg", "it needs one field"), ("img_{n}.jpg", "positional"),
                        ("img_{:05s}.jpg", "Unknown format code 's'"), ("a/{}.jpg", "without folders")]:
        with pytest.raises(ConfigError) as info:
            frame_source(frame_template=bad)
        assert one_line(info).startswith(f"data.frame_template {bad!r}: ")
        assert expect in str(info.value)


# ---- end to end: a finetune config's split reaches a dataset whose first clip decodes ------------

SMALL = ["data.clip_len=4", "data.resize=32", "data.crop=24", "data.num_test_clips=1",
         "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "data.num_workers=0"]


def first_clip(overrides: list[str]):
    cfg = load_config(FINETUNE, [*SMALL, *overrides])
    split = labeled_split(cfg.data, "train")
    labeled_split(cfg.data, "test")
    item = clip_dataset(cfg.data, split.videos, split.labels, False, cfg.seed)[0]
    assert item["video"].shape == (3, 4, 24, 24)
    return split, item


def test_a_finetune_config_reads_a_list_of_rawframe_folders(tmp_path):
    root, lists = tmp_path / "rawframes", tmp_path / "lists"
    frame_folder(root / "v1", [40, 80, 120, 160, 200], flow=250)
    frame_folder(root / "v2", [40, 80, 120, 160, 200], flow=250)
    lists.mkdir()
    (lists / "train.txt").write_text("v1 5 0\nv2 5 1\n")
    (lists / "test.txt").write_text("v2 5 1\n")
    data = ["data.format=list", f"data.video_root={root}", f"data.split_dir={lists}"]
    for template in ("", TEMPLATE):
        split, item = first_clip([*data, f"data.frame_template={template}"])
        assert split.labels == [0, 1] and item["label"] == 0
        # Normalised (x - 0.5) / 0.25: the 5 frames' levels 40..200, never the flow's 250.
        assert float(item["video"].max()) < (210 / 255 - 0.5) / 0.25


def test_a_finetune_config_reads_kinetics_csvs(kinetics, capsys):
    root, ann = kinetics
    split, item = first_clip(["data.format=kinetics_csv", f"data.video_root={root}",
                              f"data.split_dir={ann}"])
    assert split.classes == ["abseiling", "air drumming", "zumba"] and item["label"] == 0
    assert "note: 1 of 4 clips listed in" in capsys.readouterr().out
