"""One class list per labeled dataset, through the CLI on the tiny world (issue 26): a test
subset that lacks a class keeps the training labels; an unknown class or an empty HMDB split
file is one line."""

import json
import shutil

import pytest
import torch

from distinit.cli import main
from distinit.jobs.evaluate import PREDICTIONS

SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=36",
         "data.crop=32", "data.num_workers=0", "data.num_test_clips=2", "optim.batch_size=4",
         "optim.epochs=1", "log_every=1"]


@pytest.fixture
def csv_split(world, tmp_path):
    """train.csv with three of the world's actions, test.csv without the middle one."""
    classes = sorted(world.action_classes)[:3]
    videos = {c: sorted((world.actions_videos / c).glob("*.mp4")) for c in classes}
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "train.csv").write_text(
        "path,label\n" + "".join(f"{v},{c}\n" for c in classes for v in videos[c][:2]))
    (folder / "test.csv").write_text(
        "path,label\n" + "".join(f"{videos[c][2]},{c}\n" for c in (classes[0], classes[2])))
    return folder, classes


def test_finetune_and_eval_keep_the_training_labels(csv_split, tmp_path, capsys):
    folder, classes = csv_split
    data = ["data.format=csv", f"data.split_dir={folder}", "data.video_root="]
    capsys.readouterr()
    assert main(["finetune", *SMALL, *data, f"out_dir={tmp_path / 'ft'}"]) == 0
    out = capsys.readouterr().out
    assert f"note: 1 of 3 classes have no test videos ({classes[1]})" in out
    result = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert result["classes"] == classes and result["videos"] == 2
    # The middle class is absent, not 0% right; the last keeps its training index, 2.
    assert result["per_class_top1"][1] is None
    assert None not in (result["per_class_top1"][0], result["per_class_top1"][2])
    ft = torch.load(tmp_path / "ft" / PREDICTIONS, weights_only=True)
    assert ft["labels"].tolist() == [0, 2]

    assert main(["eval", *SMALL, *data, f"model.weights={tmp_path / 'ft' / 'last.pt'}",
                 f"out_dir={tmp_path / 'eval'}"]) == 0
    ev = torch.load(tmp_path / "eval" / PREDICTIONS, weights_only=True)
    assert ev["labels"].tolist() == [0, 2] and ev["classes"] == classes
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["top1"] == pytest.approx(result["top1"])


def _one_line(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_test_video_of_an_unknown_class_is_one_line(csv_split, tmp_path, capsys):
    folder, classes = csv_split
    test = folder / "test.csv"
    test.write_text(test.read_text() + f"{folder / 'x.mp4'},skate\n")
    err = _one_line(["finetune", *SMALL, "data.format=csv", f"data.split_dir={folder}",
                     "data.video_root=", f"out_dir={tmp_path / 'ft'}"], capsys)
    assert f"{test}:4: " in err and "unknown class 'skate'" in err
    assert f"the training subset {folder / 'train.csv'}" in err
    assert not (tmp_path / "ft" / "last.pt").exists()


def test_empty_hmdb_split_file_is_one_line(world, tmp_path, capsys):
    splits = tmp_path / "splits"
    shutil.copytree(world.actions_splits, splits)
    empty = splits / f"{sorted(world.action_classes)[0]}_test_split1.txt"
    empty.write_text("")
    err = _one_line(["finetune", *SMALL, "data.format=hmdb51",
                     f"data.video_root={world.actions_videos}", f"data.split_dir={splits}",
                     f"out_dir={tmp_path / 'ft'}"], capsys)
    assert f"{empty}: empty split file" in err and "extract the split archive again" in err
