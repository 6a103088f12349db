import codecs
import os
from pathlib import Path

import pytest

from distinit.data.labels.splits import (
    LabeledSplit,
    SplitError,
    absent_note,
    dataset_classes,
    load_csv,
    load_hmdb51,
    load_labeled,
    load_ucf101,
)
from distinit.errors import UserError


def touch(root: Path, *relpaths: str) -> None:
    # Split loaders only stat the videos; their contents do not matter here.
    for rel in relpaths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\0")


@pytest.fixture
def ucf(tmp_path):
    videos, splits = tmp_path / "videos", tmp_path / "splits"
    splits.mkdir()
    touch(videos, "ApplyEyeMakeup/v_a1.avi", "ApplyEyeMakeup/v_a2.avi", "Archery/v_b1.avi",
          "archery/v_b2.avi")
    # Official files use CRLF line endings and end with a blank line.
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 Archery\r\n\r\n")
    (splits / "trainlist01.txt").write_text("ApplyEyeMakeup/v_a1.avi 1\r\nArchery/v_b1.avi 2\r\n")
    (splits / "testlist01.txt").write_text("ApplyEyeMakeup/v_a2.avi\r\narchery/v_b2.avi\r\n")
    return videos, splits


def test_ucf101_train_and_test(ucf):
    videos, splits = ucf
    train = load_ucf101(videos, splits, 1, "train")
    assert train.classes == ["ApplyEyeMakeup", "Archery"]
    assert train.samples == [(videos / "ApplyEyeMakeup/v_a1.avi", 0), (videos / "Archery/v_b1.avi", 1)]
    test = load_ucf101(videos, splits, 1, "test")
    # The folder's case differs from classInd ("archery"), as in some UCF copies.
    assert test.labels == [0, 1]
    assert test.videos == [videos / "ApplyEyeMakeup/v_a2.avi", videos / "archery/v_b2.avi"]


@pytest.mark.parametrize("file, text, lineno, expect", [
    ("trainlist01.txt", "ApplyEyeMakeup/v_a1.avi 1\nArchery/v_b1.avi\n", 2, "expected 2 field"),
    ("trainlist01.txt", "ApplyEyeMakeup/v_a1.avi one\n", 1, "'one' is not an integer"),
    ("trainlist01.txt", "ApplyEyeMakeup/v_a1.avi 3\n", 1, "out of range"),
    ("trainlist01.txt", "\nApplyEyeMakeup/v_a1.avi 0\n", 2, "out of range"),
    ("testlist01.txt", "Archery/v_b2.avi 2\n", 1, "expected 1 field"),
    ("testlist01.txt", "ApplyEyeMakeup/v_a2.avi\nBowling/v_c1.avi\n", 2, "unknown class 'Bowling'"),
    ("testlist01.txt", "v_b2.avi\n", 1, "unknown class"),
    ("classInd.txt", "1 ApplyEyeMakeup\n2\n", 2, "expected 2 fields"),
    ("classInd.txt", "1 ApplyEyeMakeup\nx Archery\n", 2, "not an integer"),
    ("classInd.txt", "1 ApplyEyeMakeup\n1 Archery\n", 2, "duplicate class"),
])
def test_ucf101_malformed_lines_name_file_and_line(ucf, file, text, lineno, expect):
    videos, splits = ucf
    (splits / file).write_text(text)
    subset = "test" if file.startswith("test") else "train"
    with pytest.raises(SplitError) as info:
        load_ucf101(videos, splits, 1, subset)
    message = str(info.value)
    assert f"{splits / file}:{lineno}:" in message
    assert expect in message
    assert text.splitlines()[lineno - 1].strip() in message  # the offending text


def test_ucf101_missing_video_missing_file_empty_and_gaps(ucf):
    videos, splits = ucf
    (videos / "Archery/v_b1.avi").unlink()
    with pytest.raises(SplitError, match=r"trainlist01.txt:2: .*video not found: .*v_b1.avi"):
        load_ucf101(videos, splits, 1, "train")
    with pytest.raises(SplitError, match=r"split file not found: .*trainlist02.txt"):
        load_ucf101(videos, splits, 2, "train")
    (splits / "testlist01.txt").write_text("\r\n")
    with pytest.raises(SplitError, match=r"testlist01.txt: no videos listed"):
        load_ucf101(videos, splits, 1, "test")
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\n3 Archery\n")
    with pytest.raises(SplitError, match=r"classInd.txt: class indices must be 1..2"):
        load_ucf101(videos, splits, 1, "train")
    with pytest.raises(SplitError, match="unknown subset 'val'"):
        load_ucf101(videos, splits, 1, "val")


@pytest.fixture
def hmdb(tmp_path):
    videos, splits = tmp_path / "hmdb", tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    touch(videos, "brush_hair/a.avi", "brush_hair/b.avi", "brush_hair/c.avi", "cartwheel/d.avi",
          "cartwheel/e.avi")
    # Official lines end with a space.
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 1 \ne.avi 2 \n")
    (splits / "cartwheel_test_split2.txt").write_text("d.avi 2 \n")
    return videos, splits


def test_hmdb51_train_test_and_unused(hmdb):
    videos, splits = hmdb
    train = load_hmdb51(videos, splits, 1, "train")
    assert train.classes == ["brush_hair", "cartwheel"]
    assert train.samples == [(videos / "brush_hair/a.avi", 0), (videos / "cartwheel/d.avi", 1)]
    test = load_hmdb51(videos, splits, 1, "test")
    assert test.samples == [(videos / "brush_hair/b.avi", 0), (videos / "cartwheel/e.avi", 1)]
    # Split 2 has one class file only: classes come from the files of that split.
    assert load_hmdb51(videos, splits, 2, "test").classes == ["cartwheel"]


@pytest.mark.parametrize("text, lineno, expect", [
    ("d.avi 1\ne.avi\n", 2, "expected 2 fields"),
    ("d.avi 1\ne.avi 2 x\n", 2, "expected 2 fields"),
    ("d.avi train\n", 1, "'train' is not an integer"),
    ("d.avi 1\n\ne.avi 3\n", 3, "subset id 3 must be 0"),
])
def test_hmdb51_malformed_lines(hmdb, text, lineno, expect):
    videos, splits = hmdb
    file = splits / "cartwheel_test_split1.txt"
    file.write_text(text)
    with pytest.raises(SplitError) as info:
        load_hmdb51(videos, splits, 1, "train")
    assert f"{file}:{lineno}:" in str(info.value)
    assert expect in str(info.value)


def test_hmdb51_missing_video_no_files_and_empty(hmdb):
    videos, splits = hmdb
    (videos / "cartwheel/e.avi").unlink()
    with pytest.raises(SplitError, match=r"cartwheel_test_split1.txt:2: .*video not found"):
        load_hmdb51(videos, splits, 1, "test")
    with pytest.raises(SplitError, match=r"no files named <class>_test_split3.txt"):
        load_hmdb51(videos, splits, 3, "train")
    with pytest.raises(SplitError, match="split folder not found"):
        load_hmdb51(videos, splits / "nope", 1, "train")
    # Split 2 lists no training video at all.
    with pytest.raises(SplitError, match=r"_test_split2.txt: no videos listed"):
        load_hmdb51(videos, splits, 2, "train")


def test_csv_names_indices_header_and_relative_paths(tmp_path):
    touch(tmp_path, "v/a.mp4", "v/b.mp4", "other/c.mp4")
    (tmp_path / "names.csv").write_text("path,label\nv/a.mp4,run\n\n# a comment\nv/b.mp4,jump\n")
    split = load_csv(tmp_path / "names.csv")
    assert isinstance(split, LabeledSplit)
    assert split.classes == ["jump", "run"]
    assert split.samples == [(tmp_path / "v/a.mp4", 1), (tmp_path / "v/b.mp4", 0)]

    (tmp_path / "ints.csv").write_text("a.mp4,2\nb.mp4,0\n")
    split = load_csv(tmp_path / "ints.csv", video_root=tmp_path / "v")
    assert split.classes == ["0", "1", "2"] and split.labels == [2, 0]

    # With given classes, names and indices can mix; absolute paths are kept.
    (tmp_path / "mixed.csv").write_text(f"v/a.mp4,jump\n{tmp_path / 'other/c.mp4'},0\n")
    split = load_csv(tmp_path / "mixed.csv", classes=["run", "jump"])
    assert split.samples == [(tmp_path / "v/a.mp4", 1), (tmp_path / "other/c.mp4", 0)]


@pytest.mark.parametrize("text, lineno, expect", [
    ("a.mp4,0\nb.mp4\n", 2, "expected 2 fields"),
    ("a.mp4,0\nb.mp4,0,extra\n", 2, "expected 2 fields"),
    ("a.mp4,0\nb.mp4,7\n", 2, "label 7 is out of range 0..1"),
    ("a.mp4,0\nb.mp4,-1\n", 2, "label -1 is out of range"),
    ("a.mp4,run\nb.mp4,swim\n", 2, "unknown class 'swim'"),
    ("a.mp4,0\nmissing.mp4,1\n", 2, "video not found"),
])
def test_csv_errors_name_file_and_line(tmp_path, text, lineno, expect):
    touch(tmp_path, "a.mp4", "b.mp4")
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(SplitError) as info:
        load_csv(tmp_path / "s.csv", classes=["run", "jump"])
    assert f"{tmp_path / 's.csv'}:{lineno}:" in str(info.value)
    assert expect in str(info.value)


def test_csv_missing_and_empty(tmp_path):
    with pytest.raises(SplitError, match="CSV split file not found"):
        load_csv(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("path,label\n")
    with pytest.raises(SplitError, match="empty.csv: no videos listed"):
        load_csv(tmp_path / "empty.csv")


def test_load_labeled_dispatches_and_lists_formats(ucf, hmdb, tmp_path):
    videos, splits = ucf
    assert load_labeled("ucf101", videos, splits, 1, "test").labels == [0, 1]
    assert len(load_labeled("hmdb51", *hmdb, 1, "train").samples) == 2
    folder = tmp_path / "csvsplit"
    touch(folder, "x.mp4", "y.mp4")
    (folder / "train.csv").write_text("x.mp4,0\n")
    (folder / "test.csv").write_text("y.mp4,0\n")
    assert load_labeled("csv", None, folder, subset="test").videos == [folder / "y.mp4"]
    assert load_labeled("csv", None, folder / "train.csv").videos == [folder / "x.mp4"]
    with pytest.raises(UserError, match="unknown split format 'kinetics'; use one of ucf101, hmdb51, csv"):
        load_labeled("kinetics", videos, splits)


def test_videos_whose_names_are_not_utf8_are_found(ucf, hmdb, tmp_path):
    # Split files name videos in the bytes of the file system; b"\xe9" is latin-1 for é.
    name = os.fsdecode(b"caf\xe9.avi")
    videos, splits = ucf
    touch(videos, f"Archery/{name}")
    (splits / "trainlist01.txt").write_bytes(b"ApplyEyeMakeup/v_a1.avi 1\r\nArchery/caf\xe9.avi 2\r\n")
    assert load_ucf101(videos, splits, 1, "train").samples[1] == (videos / "Archery" / name, 1)

    videos, splits = hmdb
    touch(videos, f"cartwheel/{name}")
    (splits / "cartwheel_test_split1.txt").write_bytes(b"d.avi 1 \ncaf\xe9.avi 2 \n")
    assert (videos / "cartwheel" / name, 1) in load_hmdb51(videos, splits, 1, "test").samples

    touch(tmp_path, f"v/{name}")
    # Spreadsheets save a CSV with a byte-order mark; the header is still recognised.
    (tmp_path / "s.csv").write_bytes(codecs.BOM_UTF8 + b"path,label\nv/caf\xe9.avi,run\n")
    split = load_csv(tmp_path / "s.csv")
    assert split.samples == [(tmp_path / "v" / name, 0)] and split.videos[0].is_file()


# ---- one class list per dataset (issue 26) ------------------------------------------------------

@pytest.fixture
def csv_set(tmp_path):
    """A CSV dataset of three classes whose test.csv lacks the middle one (`run`)."""
    folder = tmp_path / "csvset"
    touch(folder, "j1.mp4", "r1.mp4", "s1.mp4", "j2.mp4", "s2.mp4")
    (folder / "train.csv").write_text("path,label\nj1.mp4,jump\nr1.mp4,run\ns1.mp4,swim\n")
    (folder / "test.csv").write_text("path,label\nj2.mp4,jump\ns2.mp4,swim\n")
    return folder


def test_csv_test_subset_lacking_a_class_keeps_the_training_labels(csv_set):
    train = load_labeled("csv", None, csv_set, subset="train")
    test = load_labeled("csv", None, csv_set, subset="test")
    assert train.classes == test.classes == ["jump", "run", "swim"]
    # swim is label 2 in both subsets; read alone, test.csv would have made it 1.
    assert test.samples == [(csv_set / "j2.mp4", 0), (csv_set / "s2.mp4", 2)]
    assert load_csv(csv_set / "test.csv").labels == [0, 1]  # the file alone: the old shift
    assert train.absent == [] and test.absent == ["run"]
    assert absent_note(test, "test") == ("note: 1 of 3 classes have no test videos (run); their "
                                         "per-class accuracy is reported as null")


def test_csv_integer_labels_index_the_training_classes(csv_set):
    (csv_set / "train.csv").write_text("j1.mp4,0\nr1.mp4,1\ns1.mp4,2\n")
    (csv_set / "test.csv").write_text("s2.mp4,2\n")
    test = load_labeled("csv", None, csv_set, subset="test")
    assert test.classes == ["0", "1", "2"] and test.labels == [2]
    (csv_set / "test.csv").write_text("s2.mp4,3\n")
    with pytest.raises(SplitError, match=r"test.csv:1: .*label 3 is out of range 0..2 of the "
                                         r"classes of the training subset .*train.csv"):
        load_labeled("csv", None, csv_set, subset="test")


def test_csv_labels_txt_or_classind_beside_the_splits_is_the_class_list(csv_set):
    # A class with no training video is kept in its place (the list, not train.csv, decides).
    (csv_set / "classInd.txt").write_text("1 swim\r\n2 jump\r\n3 run\r\n4 dive\r\n")
    classes = dataset_classes("csv", csv_set)
    assert classes.names == ["swim", "jump", "run", "dive"]
    assert load_labeled("csv", None, csv_set, subset="test").labels == [1, 0]
    (csv_set / "labels.txt").write_text("# label order\ndive\njump\n\nrun\nswim\n")  # wins
    assert dataset_classes("csv", csv_set).names == ["dive", "jump", "run", "swim"]
    train = load_labeled("csv", None, csv_set, subset="train")
    assert train.labels == [1, 2, 3] and train.absent == ["dive"]
    # One CSV file given as the split: the list beside it still decides.
    assert load_labeled("csv", None, csv_set / "test.csv").labels == [1, 3]
    (csv_set / "labels.txt").write_text("dive\njump\nswim\n")
    with pytest.raises(SplitError, match=r"train.csv:3: .*unknown class 'run': not one of the 3 "
                                         r"classes of .*labels.txt"):
        load_labeled("csv", None, csv_set, subset="train")
    (csv_set / "labels.txt").write_text("dive\njump\ndive\n")
    with pytest.raises(SplitError, match=r"labels.txt:3: .*duplicate class"):
        dataset_classes("csv", csv_set)


def test_csv_test_video_of_an_unknown_class_names_file_line_and_class(csv_set):
    (csv_set / "test.csv").write_text("path,label\nj2.mp4,jump\ns2.mp4,skate\n")
    with pytest.raises(SplitError) as info:
        load_labeled("csv", None, csv_set, subset="test")
    message = str(info.value)
    assert f"{csv_set / 'test.csv'}:3: in 's2.mp4,skate': unknown class 'skate'" in message
    assert f"the training subset {csv_set / 'train.csv'} (jump, run, swim)" in message
    assert "\n" not in message


def test_csv_class_list_needs_train_csv_or_labels_txt(csv_set):
    (csv_set / "train.csv").unlink()
    with pytest.raises(SplitError, match=r"train.csv not found: a CSV dataset's classes are those "
                                         r"of its training subset"):
        load_labeled("csv", None, csv_set, subset="test")
    (csv_set / "labels.txt").write_text("jump\nrun\nswim\n")
    assert load_labeled("csv", None, csv_set, subset="test").labels == [0, 2]


def test_ucf101_and_hmdb51_read_both_subsets_against_one_list(ucf, hmdb):
    videos, splits = ucf
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 Archery\r\n3 Bowling\r\n")
    (splits / "testlist01.txt").write_text("archery/v_b2.avi\r\n")
    test = load_labeled("ucf101", videos, splits, 1, "test")
    assert test.labels == [1] and test.absent == ["ApplyEyeMakeup", "Bowling"]
    videos, splits = hmdb
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nc.avi 0 \n")  # no test video
    test = load_labeled("hmdb51", videos, splits, 1, "test")
    assert test.classes == ["brush_hair", "cartwheel"] and test.labels == [1]
    assert test.absent == ["brush_hair"]


def test_hmdb51_empty_class_file_is_one_error(hmdb):
    videos, splits = hmdb
    file = splits / "brush_hair_test_split1.txt"
    for text in ("", "\n \n"):
        file.write_text(text)
        for subset in ("train", "test"):
            with pytest.raises(SplitError) as info:
                load_hmdb51(videos, splits, 1, subset)
            assert str(info.value) == (f"{file}: empty split file (an official one lists every "
                                       "video of its class); extract the split archive again")


HMDB51_CLASSES = ["brush_hair", "cartwheel", "catch", "chew", "clap", "climb", "climb_stairs", "dive", "draw_sword", "dribble", "drink", "eat", "fall_floor", "fencing", "flic_flac", "golf", "handstand", "hit", "hug", "jump", "kick", "kick_ball", "kiss", "laugh", "pick", "pour", "pullup", "punch", "push", "pushup", "ride_bike", "ride_horse", "run", "shake_hands", "shoot_ball", "shoot_bow", "shoot_gun", "sit", "situp", "smile", "smoke", "somersault", "stand", "swing_baseball", "sword", "sword_exercise", "talk", "throw", "turn", "walk", "wave"]


def test_hmdb51_labels_follow_the_alphabetical_class_order(tmp_path):
    """Label i is the i-th class name in alphabetical order, as other tools' HMDB-51 heads have
    it; sorting the split files' names instead put climb_stairs before climb, kick_ball before
    kick and sword_exercise before sword."""
    videos, splits = tmp_path / "videos", tmp_path / "splits"
    splits.mkdir()
    for name in HMDB51_CLASSES:
        (splits / f"{name}_test_split1.txt").write_bytes(
            f"{name}_a.avi 1 \r\n{name}_b.avi 2 \r\n".encode())  # the official CRLF lines
        touch(videos, f"{name}/{name}_a.avi", f"{name}/{name}_b.avi")
    test = load_hmdb51(videos, splits, 1, "test")
    assert len(HMDB51_CLASSES) == 51 and test.classes == sorted(HMDB51_CLASSES)
    assert [test.classes.index(n) for n in ("climb", "climb_stairs", "kick", "kick_ball", "sword",
                                            "sword_exercise")] == [5, 6, 20, 21, 44, 45]
    assert all(test.classes[label] == video.parent.name for video, label in test.samples)
