"""A teacher is checked on its first batch (and a TorchScript one at build time): (N, C) logits,
finite, of the classes it declares. A bad one is one line naming it, never a run that trains on
a one-class head or on NaN, nor a cache of NaN. Good teachers give the same numbers as before."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from distinit.cli import main
from distinit.config import load_config
from distinit.data.video.io import list_videos
from distinit.engine.runtime import Runtime
from distinit.models.teachers import Teacher, TeacherError, build_teacher, check_logits
from distinit.targets.cache import _encode, cache_complete, video_targets
from distinit.targets.teachers import TeacherTargets, build_teachers

SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=36",
         "data.crop=32", "data.num_workers=0", "optim.batch_size=4", "optim.epochs=1",
         "log_every=1", "distill.holdout=0", "precision=fp32"]


class Nan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


def _head(*tail: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10), *tail).eval()


def _script(model: nn.Module, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(path))
    return str(path)


def _one_line(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]  # no bars
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_torchscript_teacher_of_shape_b_1_c_is_refused_at_build_time(tmp_path, world, capsys):
    path = _script(_head(nn.Unflatten(1, (1, 10))), tmp_path / "t.pt")
    with pytest.raises(TeacherError, match=r"returns logits of shape \(1, 1, 10\) for 1 image; "
                                           r"a teacher must return \(N, C\) logits"):
        build_teacher(f"torchscript:{path}", input_size=32)
    out = tmp_path / "run"
    teacher = f'distill.teachers=[{{spec: "torchscript:{path}"}}]'
    err = _one_line(capsys, ["distill", *SMALL, teacher, f"data.videos={world.corpus_dir}",
                             f"out_dir={out}"])
    assert err == (f"distinit distill: error: teacher torchscript:{path} returns logits of shape "
                   "(1, 1, 10) for 1 image; a teacher must return (N, C) logits for N images: "
                   "squeeze or flatten its output")
    assert not (out / "last.pt").exists()


def test_a_nan_teacher_is_one_line_and_writes_no_cache(tmp_path, world, capsys):
    path = _script(_head(Nan()), tmp_path / "nan.pt")
    teacher = f'distill.teachers=[{{spec: "torchscript:{path}"}}]'
    cache = tmp_path / "cache"
    err = _one_line(capsys, ["cache-targets", *SMALL, teacher, f"data.videos={world.corpus_dir}",
                             f"distill.target_cache={cache}", "distill.cache_crops=2"])
    assert f"teacher torchscript:{path} returns NaN or infinite logits" in err
    assert not cache_complete(cache) and not list(cache.glob("shard-*"))
    out = tmp_path / "run"  # live: refused on the first batch, before the first step
    err = _one_line(capsys, ["distill", *SMALL, teacher, f"data.videos={world.corpus_dir}",
                             f"out_dir={out}"])
    assert f"teacher torchscript:{path} returns NaN or infinite logits" in err
    assert not (out / "last.pt").exists()


def test_a_teacher_whose_classes_change_with_the_input_size_is_refused():
    # Flattened feature maps: 2 x 28 x 28 "classes" on the 224 px probe, 2 x 4 x 4 at 32 px.
    teacher = Teacher(nn.Sequential(nn.Conv2d(3, 2, 8, stride=8), nn.Flatten()), "fcn", None)
    assert teacher.num_classes == 2 * 28 * 28
    targets = TeacherTargets([teacher], [0.5] * 3, [0.25] * 3, frames="center")
    with pytest.raises(TeacherError, match=r"teacher fcn returns 32 classes but declares 1568 "
                                           r"\(the student's head is sized from it\).*input_size"):
        targets({"video": torch.zeros(2, 3, 4, 32, 32)})


def test_plain_modules_and_cached_logits_are_checked_once():
    bad = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5), nn.Unflatten(1, (1, 5)))
    targets = TeacherTargets([bad], [0.5] * 3, [0.25] * 3, frames="center")
    with pytest.raises(TeacherError, match=r"returns logits of shape \(2, 1, 5\) for 2 images"):
        targets({"video": torch.zeros(2, 3, 4, 8, 8)})
    with pytest.raises(TeacherError, match="returns 1 class; a teacher must score at least 2"):
        check_logits("one", torch.zeros(4, 1), 4)
    with pytest.raises(TeacherError, match="returns a tuple, not a tensor"):
        check_logits("pair", (torch.zeros(4, 3), None), 4)

    good = Teacher(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)), "t", None,
                   num_classes=5)
    targets = TeacherTargets([good], [0.5] * 3, [0.25] * 3, frames="center")
    nan = torch.full((2, 4, 5), float("nan"))
    with pytest.raises(TeacherError, match="teacher-target cache .* holds NaN or infinite "
                                           "logits of teacher t; delete it"):
        targets.clip_logits({"teacher_logits0": nan})
    with pytest.raises(TeacherError, match=r"holds logits of shape \(2, 4, 7\) for teacher t, "
                                           "which declares 5 classes; rebuild"):
        targets({"video": torch.zeros(2, 3, 4, 8, 8), "teacher_logits0": torch.zeros(2, 4, 7)})
    targets({"video": torch.zeros(2, 3, 4, 8, 8), "teacher_logits0": torch.zeros(2, 4, 5)})
    targets({"video": torch.zeros(2, 3, 4, 8, 8)})  # live: the teacher checks itself
    assert good.__dict__["_logits_checked"] and targets._cache_checked == [True]
    # Checked once per process: later batches pay a flag, not a pass over the logits.
    targets({"video": torch.zeros(2, 3, 4, 8, 8), "teacher_logits0": nan})


def _old_video_targets(video, cfg, teachers, runtime, batch):
    """video_targets as it was before the checks: every crop of the video stacked at once."""
    from distinit.data.clips.transforms import apply_box, resize_short_side, to_float_clip
    from distinit.data.video.io import read_all_frames
    from distinit.targets.cache import video_boxes

    dc, dcfg = cfg.data, cfg.distill
    frames = read_all_frames(video, dc.backend)
    rows = list(range(0, len(frames), dcfg.cache_frame_step))
    clip = resize_short_side(to_float_clip(frames[rows]), dc.resize)
    boxes = video_boxes(video, *clip.shape[-2:], cfg)
    pixels = torch.stack([apply_box(clip, b, dc.crop).transpose(0, 1) for b in boxes]).flatten(0, 1)
    out = {"boxes": np.array([[b.top, b.left, b.height, b.width, int(b.flip)] for b in boxes],
                             dtype=np.int32),
           "size": np.array([len(frames), *clip.shape[-2:]], dtype=np.int32)}
    for i, teacher in enumerate(teachers):
        parts = []
        for s in range(0, len(pixels), batch):
            with runtime.autocast():
                parts.append(teacher(pixels[s:s + batch]).float())
        logits = torch.cat(parts).view(len(boxes), len(rows), -1).transpose(0, 1)
        out.update(_encode(logits, i, dcfg.cache_dtype, dcfg.cache_topk))
    return out


@pytest.mark.parametrize("dtype, batch", [("float16", 7), ("topk", 16), ("float16", 1000)])
def test_cache_targets_are_bitwise_those_of_before(world, teacher_file, dtype, batch):
    cfg = load_config(None, [*SMALL, "data.scale=[0.5,1]", "distill.cache_crops=3",
                             "distill.cache_frame_step=2", f"distill.cache_dtype={dtype}",
                             "distill.cache_topk=4",
                             f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}, '
                             f'{{spec: "ckpt:{teacher_file}", input_size: 24}}]'])
    teachers = build_teachers(cfg.distill.teachers)
    runtime = Runtime.of(cfg, torch.device("cpu"))
    video = list_videos(world.corpus_dir)[0]
    new = video_targets(video, cfg, teachers, runtime, batch)
    old = _old_video_targets(video, cfg, teachers, runtime, batch)
    assert sorted(new) == sorted(old)
    for key in old:
        np.testing.assert_array_equal(new[key], old[key], err_msg=key)


def test_logits_beyond_float16_are_not_cached(world, tmp_path):
    class Huge(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), 1e6)

    class Later(nn.Module):  # finite on its first batch (the teacher's own check), then NaN
        calls = 0

        def forward(self, x):
            self.calls += 1
            return torch.zeros(x.shape[0], 3) * (1 if self.calls <= 2 else float("nan"))

    cfg = load_config(None, [*SMALL, "distill.cache_crops=1"])
    runtime = Runtime.of(cfg, torch.device("cpu"))
    video = list_videos(world.corpus_dir)[0]
    with pytest.raises(TeacherError, match=rf"teacher huge returns logits as large as 1e\+06 on "
                                           rf"{video}, beyond the float16"):
        video_targets(video, cfg, [Teacher(Huge(), "huge", None)], runtime)
    with pytest.raises(TeacherError, match=rf"teacher later returns NaN or infinite logits on "
                                           rf"{video}; the cache keeps nothing of it"):
        video_targets(video, cfg, [Teacher(Later(), "later", None)], runtime, batch=4)
