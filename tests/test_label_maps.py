"""A fine-tuned checkpoint carries its class names (label order), `export` keeps them, and `eval`
refuses a test split whose classes differ from them (same count, other order: HMDB-51 in the old
split-file order against the alphabetical one) in one line; `finetune` from a fine-tuned
checkpoint says that its head and label map are not used."""

import json

import pytest
import torch
from test_labels import _one_line

from distinit.cli import main
from distinit.engine.checkpoint import load_checkpoint
from distinit.errors import UserError
from distinit.jobs.label_map import check_classes

SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=36",
         "data.crop=32", "data.num_workers=0", "data.num_test_clips=2", "optim.batch_size=4",
         "optim.epochs=1", "log_every=1"]


def _split(folder, videos, classes):
    """A CSV dataset: train.csv (two videos a class), test.csv (one), labels.txt in `classes`'
    order (the label map)."""
    folder.mkdir()
    (folder / "train.csv").write_text(
        "path,label\n" + "".join(f"{v},{c}\n" for c in videos for v in videos[c][:2]))
    (folder / "test.csv").write_text(
        "path,label\n" + "".join(f"{videos[c][2]},{c}\n" for c in videos))
    (folder / "labels.txt").write_text("".join(f"{c}\n" for c in classes))
    return ["data.format=csv", f"data.split_dir={folder}", "data.video_root="]


@pytest.fixture(scope="module")
def tuned(world, tmp_path_factory):
    """A fine-tuned run on two of the world's actions, and the same videos with the label map
    reversed."""
    tmp = tmp_path_factory.mktemp("labels")
    classes = sorted(world.action_classes)[:2]
    videos = {c: sorted((world.actions_videos / c).glob("*.mp4"))[:3] for c in classes}
    data = _split(tmp / "split", videos, classes)
    reversed_data = _split(tmp / "reversed", videos, classes[::-1])
    assert main(["finetune", *SMALL, *data, f"out_dir={tmp / 'ft'}"]) == 0
    return tmp, classes, data, reversed_data


def test_a_fine_tuned_checkpoint_carries_its_classes(tuned):
    tmp, classes, _, _ = tuned
    assert load_checkpoint(tmp / "ft" / "last.pt")["classes"] == classes
    assert json.loads((tmp / "ft" / "results.json").read_text())["classes"] == classes


def test_eval_on_the_classes_in_another_order_is_one_line(tuned, tmp_path, capsys):
    tmp, classes, data, reversed_data = tuned
    weights = tmp / "ft" / "last.pt"
    err = _one_line(["eval", *SMALL, *reversed_data, f"model.weights={weights}",
                     f"out_dir={tmp_path / 'e'}"], capsys)
    assert f"labels class 0 {classes[0]!r} but the test split's class 0 is {classes[1]!r}" in err
    assert "another order" in err and "labels.txt" in err
    assert not (tmp_path / "e" / "results.json").exists()
    # The split it was fine-tuned on evaluates.
    assert main(["eval", *SMALL, *data, f"model.weights={weights}",
                 f"out_dir={tmp_path / 'ok'}"]) == 0
    result = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert result["classes"] == classes and result["corpus"]["test"]["videos"] == 2


def test_export_keeps_the_classes_and_eval_still_checks_them(tuned, tmp_path, capsys):
    tmp, classes, _, reversed_data = tuned
    out = tmp_path / "ft.safetensors"
    assert main(["export", str(tmp / "ft" / "last.pt"), str(out)]) == 0
    assert load_checkpoint(out)["classes"] == classes
    err = _one_line(["eval", *SMALL, *reversed_data, f"model.weights={out}",
                     f"out_dir={tmp_path / 'e'}"], capsys)
    assert "but the test split's class 0 is" in err


def test_a_checkpoint_without_classes_is_checked_by_its_size_alone(tuned, tmp_path):
    tmp, _, _, reversed_data = tuned
    ckpt = torch.load(tmp / "ft" / "last.pt", weights_only=True)
    del ckpt["classes"]  # a checkpoint from before they were stored
    torch.save(ckpt, tmp_path / "old.pt")
    assert main(["eval", *SMALL, *reversed_data, f"model.weights={tmp_path / 'old.pt'}",
                 f"out_dir={tmp_path / 'e'}"]) == 0


def test_finetune_from_a_fine_tuned_checkpoint_says_its_head_is_not_used(tuned, tmp_path,
                                                                         capsys):
    tmp, classes, _, reversed_data = tuned
    capsys.readouterr()
    assert main(["finetune", *SMALL, *reversed_data, "model.init=checkpoint",
                 f"model.weights={tmp / 'ft' / 'last.pt'}", f"out_dir={tmp_path / 'ft2'}"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "label map" in line]
    assert len(notes) == 1 and notes[0].startswith("note: ") and "new head" in notes[0]
    assert f"2 classes ({classes[0]}, {classes[1]})" in notes[0]
    assert load_checkpoint(tmp_path / "ft2" / "last.pt")["classes"] == classes[::-1]


def test_check_classes_names_the_first_difference():
    check_classes(None, ["a", "b"], "w.pt")
    check_classes(["a", "b"], ["a", "b"], "w.pt")
    with pytest.raises(UserError, match="class 1 'b' but the test split's class 1 is 'c' "
                                        r"\(other class names\)"):
        check_classes(["a", "b"], ["a", "c"], "w.pt")
    with pytest.raises(UserError, match="fine-tuned on 2 classes but the test split has 3"):
        check_classes(["a", "b"], ["a", "b", "c"], "w.pt")


def test_resuming_a_fine_tune_with_another_label_map_is_one_line(world, tmp_path, capsys):
    classes = sorted(world.action_classes)[:2]
    videos = {c: sorted((world.actions_videos / c).glob("*.mp4"))[:3] for c in classes}
    data = _split(tmp_path / "split", videos, classes)
    out = f"out_dir={tmp_path / 'ft'}"
    assert main(["finetune", *SMALL, *data, out, "stop_after=1"]) == 0
    (tmp_path / "split" / "labels.txt").write_text("".join(f"{c}\n" for c in classes[::-1]))
    err = _one_line(["finetune", *SMALL, *data, out, "--resume"], capsys)
    assert "the training split's class 0" in err and "another order" in err
    assert load_checkpoint(tmp_path / "ft" / "last.pt")["step"] == 1  # the run is untouched
