"""Late fusion of fine-tuned runs from their per-video softmax (predictions.pt)."""

import pytest
import torch

from distinit.cli import main
from distinit.jobs.evaluate import PREDICTIONS, fuse, video_scores


def _save(folder, probs, labels, videos=("a", "b", "c"), classes=("x", "y")):
    folder.mkdir()
    torch.save({"probs": torch.tensor(probs), "labels": torch.tensor(labels),
                "videos": list(videos), "classes": list(classes)}, folder / PREDICTIONS)
    return folder / PREDICTIONS


def test_fusion_averages_the_softmax_of_each_video(tmp_path):
    # Each run alone gets 2 of 3 videos right; their mean gets all 3.
    a = _save(tmp_path / "rgb", [[0.9, 0.1], [0.45, 0.55], [0.4, 0.6]], [0, 0, 1])
    b = _save(tmp_path / "flow", [[0.6, 0.4], [0.8, 0.2], [0.7, 0.3]], [0, 0, 1])
    assert video_scores(torch.load(a)["probs"], torch.tensor([0, 0, 1]))["top1"] == pytest.approx(
        200 / 3)
    assert fuse([a, b])["top1"] == pytest.approx(200 / 3)  # video c: 0.55 vs 0.45 -> wrong
    assert fuse([a, b], [1.0, 0.2])["top1"] == pytest.approx(100.0)


def test_videos_never_scored_are_left_out(tmp_path):
    a = _save(tmp_path / "a", [[0.9, 0.1], [float("nan")] * 2, [0.4, 0.6]], [0, 0, 1])
    assert fuse([a])["videos"] == 2 and fuse([a])["top1"] == 100.0


def test_the_command_refuses_runs_on_other_videos(tmp_path, capsys):
    _save(tmp_path / "a", [[0.9, 0.1]] * 3, [0, 0, 1])
    _save(tmp_path / "b", [[0.9, 0.1]] * 3, [0, 0, 1], videos=("a", "b", "d"))
    assert main(["fuse", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "other test videos" in capsys.readouterr().err
    assert main(["fuse", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "no predictions.pt" in capsys.readouterr().err
    assert main(["fuse", str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert '"top1"' in capsys.readouterr().out
