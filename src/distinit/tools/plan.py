"""`distinit plan CONFIG.yaml [key=value ...]`: what a run of the config costs, before anything
runs. Clips and optimizer steps by the loop's own arithmetic (`engine/sampler.StreamSampler`),
training FLOPs per clip counted on the config's student (and its teachers when it distills),
GPU-hours and wall time at a per-GPU rate (assumed unless you say you measured it), and the disk
a clip store and a target cache take (`data/stores/size.py`, `targets/cache_size.py`, from a
probed sample of the corpus, or from a corpus described with --videos-per-corpus)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from distinit.arguments import Parser
from distinit.build import holdout_split, input_channels, make_student
from distinit.config import Config, TeacherConfig, config_from_args
from distinit.data.corpus.sample import CorpusSample, sample_corpus, uniform_corpus
from distinit.data.labels.splits import load_labeled
from distinit.data.stores.disk_room import human_bytes
from distinit.data.stores.size import clip_store_bytes
from distinit.data.video.io import list_videos
from distinit.engine.sampler import StreamSampler
from distinit.engine.train import planned_steps
from distinit.errors import UserError, one_line
from distinit.methods import any_config_class
from distinit.methods.heads import MultiHeadStudent
from distinit.models.flops import frame_flops, training_flops
from distinit.models.image_resnet import IMAGE_MODELS, build_image_model
from distinit.models.teachers import Teacher
from distinit.optional import import_timm, import_torchvision
from distinit.targets.cache_size import cache_bytes, teacher_frames
from distinit.targets.teachers import build_teachers

H100_BF16 = 989e12  # dense bf16 FLOP/s of one H100 SXM, for the MFU a rate implies
# docs/SCALING.md: R(2+1)D-18's 121 GFLOP step at 25% of an H100's bf16 peak. Not measured.
ASSUMED_RATE = 2040.0
KINETICS = "--videos-per-corpus 240000 --frames-per-video 300 --frame-size 240x320"


@dataclass(frozen=True)
class Counted:
    """A teacher's class count and GFLOP per frame, and what stood in for it, if anything."""
    spec: str
    classes: int
    flops: float
    note: str = ""


def corpus_of(cfg: Config, videos: int | None, frames: int | None, size: str | None,
              sample: int) -> CorpusSample:
    """The corpus a run trains on: described on the command line, or probed (data.videos, else
    the labeled train split)."""
    given = [x is not None for x in (videos, frames, size)]
    if any(given):
        if not all(given):
            raise UserError("give --videos-per-corpus, --frames-per-video and --frame-size "
                            f"together (Kinetics-400: {KINETICS})")
        h, _, w = size.lower().partition("x")
        if not (h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
            raise UserError(f"--frame-size {size!r}: expected HEIGHTxWIDTH in pixels, e.g. 240x320")
        if videos < 1 or frames < 1:
            raise UserError("--videos-per-corpus and --frames-per-video must be at least 1")
        return uniform_corpus(videos, frames, int(h), int(w))
    dc = cfg.data
    if dc.videos:
        if not Path(dc.videos).exists():
            raise UserError(f"data.videos={dc.videos} is not here: plan for a corpus you do not "
                            "have with --videos-per-corpus N --frames-per-video F --frame-size HxW "
                            f"(Kinetics-400: {KINETICS})")
        listed = list_videos(dc.videos, dc.extensions)
    elif dc.video_root and dc.split_dir:
        listed = load_labeled(dc.format, dc.video_root, dc.split_dir, dc.split, "train",
                              name_template=dc.name_template).videos
    else:
        raise UserError("the config names no videos: set data.videos (or a labeled split), or "
                        f"describe them with {KINETICS}")
    return sample_corpus(listed, sample, dc.backend, dc.frame_template)


def training_videos(cfg: Config, videos: int) -> int:
    """The videos the training set draws from: a distillation holds some out (`holdout_split`)."""
    if not cfg.distill.teachers:
        return videos
    train, _ = holdout_split(range(videos), cfg.distill.holdout)
    return len(train)


def steps_at(cfg: Config, size: int, gpus: int) -> dict:
    """Optimizer steps on `gpus` processes, counted as `engine/train.train` counts them."""
    o = cfg.optim
    sampler = StreamSampler(size, o.batch_size, cfg.seed, world=gpus,
                            accum_steps=o.accum_steps, epoch_size=o.epoch_size)
    per_epoch = sampler.steps_per_epoch  # a partial last step of an epoch is dropped
    total = planned_steps(o.epochs, per_epoch) if per_epoch else 0
    if cfg.stop_after > 0:
        total = min(total, cfg.stop_after)
    return {"gpus": gpus, "global_batch": sampler.global_batch, "steps_per_epoch": per_epoch,
            "steps": total, "clips": total * sampler.global_batch}


def _stand_in(t: TeacherConfig) -> torch.nn.Module | None:
    """An untrained network of a teacher's architecture, when its weights are not here."""
    arch = t.arch or (t.spec if t.spec.startswith(("torchvision:", "timm:")) else "")
    family, _, name = arch.partition(":")
    if family == "torchvision" and name:
        return import_torchvision().models.get_model(name.partition(".")[0], weights=None)
    if family == "timm" and name:
        return import_timm().create_model(name, pretrained=False)
    return build_image_model(arch) if arch in IMAGE_MODELS else None


def count_teachers(cfg: Config, classes: list[int] | None = None) -> list[Counted]:
    """Each teacher's classes and FLOPs per frame; a teacher whose weights are not here is
    counted on an untrained network of its architecture, with `classes[i]` classes if given."""
    out = []
    for i, t in enumerate(cfg.distill.teachers):
        try:
            teacher, note = build_teachers([t])[0], ""
        except UserError as e:
            model = _stand_in(t)
            if model is None:
                raise UserError(f"cannot count teacher {t.spec}'s FLOPs: {one_line(e)}; or give "
                                "its arch (distill.teachers[].arch)") from None
            teacher = Teacher(model, t.spec, t.input_size or 224)
            reason = one_line(e).split(" (")[0].split(";")[0]  # e.g. teacher weights not found: F
            note = f"counted on an untrained network of its architecture: {reason}"
            if classes:  # the head's size only moves the cache's bytes, not the FLOPs much
                teacher.num_classes = classes[i]
                note += f"; {classes[i]} classes as given"
        out.append(Counted(t.spec, teacher.num_classes, frame_flops(teacher, cfg.data.crop), note))
    return out


def student_flops(cfg: Config, classes: list[int]) -> float:
    """One clip's forward and backward through the config's student, built as the run builds
    it: a distillation's student has one head per teacher."""
    dc = cfg.data
    net = make_student(cfg.model, num_classes=0, in_channels=input_channels(dc))
    if classes:
        net = MultiHeadStudent(net, classes)
    x = torch.randn(1, input_channels(dc), dc.clip_len, dc.crop, dc.crop)  # (B, C, T, H, W)
    return training_flops(net, x)


def plan(cfg: Config, corpus: CorpusSample, gpus: list[int], rate: float, measured: bool,
         teacher_classes: list[int] | None = None) -> dict:
    """Everything `distinit plan` prints, as a dict (its --json)."""
    dc, dcfg, o = cfg.data, cfg.distill, cfg.optim
    teachers = count_teachers(cfg, teacher_classes) if dcfg.teachers else []
    classes = [t.classes for t in teachers]
    student = student_flops(cfg, classes)
    live = 0 if dcfg.target_cache or not teachers else (  # as targets/frames.frame_indices
        min(dcfg.num_frames, dc.clip_len) if dcfg.frames == "multi" else 1)
    per_frame = sum(t.flops for t in teachers)
    step = student + live * per_frame
    size = training_videos(cfg, corpus.videos)
    runs = []
    for g in gpus:
        r = steps_at(cfg, size, g)
        gpu_hours = r["clips"] / rate / 3600
        runs.append({**r, "flops": r["clips"] * step, "gpu_hours": gpu_hours,
                     "wall_hours": gpu_hours / g})
    store = clip_store_bytes(corpus, dc.resize)
    out = {
        "corpus": {"videos": corpus.videos, "training_videos": size, "source": corpus.source,
                   "probe_failed": corpus.failed, "exact": corpus.exact},
        "clips_nominal": round(o.epochs * (o.epoch_size or size)),
        "clip_shape": [input_channels(dc), dc.clip_len, dc.crop, dc.crop],
        "student": {"arch": cfg.model.arch, "train_flops_per_clip": student},
        "teachers": [vars(t) for t in teachers],
        "live_teacher_frames_per_clip": live,
        "flops_per_clip": step,
        "rate": {"clips_per_s_per_gpu": rate, "measured": measured,
                 "h100_mfu": rate * step / H100_BF16},
        "runs": runs,
        "clip_store": {"bytes": store.value, "rel_error": store.rel_error, "resize": dc.resize,
                       "codec": "raw", "config_codec": dc.store_codec},
    }
    if teachers:
        cache = cache_bytes(corpus, dc, dcfg, classes)
        frames = teacher_frames(corpus, dc, dcfg)
        out["target_cache"] = {
            "bytes": cache.value, "rel_error": cache.rel_error, "crops": dcfg.cache_crops,
            "frame_step": dcfg.cache_frame_step, "dtype": dcfg.cache_dtype,
            "topk": dcfg.cache_topk if dcfg.cache_dtype == "topk" else 0,
            "teacher_frames": frames.value, "build_flops": frames.value * per_frame,
            "used": bool(dcfg.target_cache)}
    return out


def _g(flops: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def _hours(h: float) -> str:
    return f"{h * 60:.1f} min" if h < 1 else f"{h:,.1f} h" if h < 48 else f"{h / 24:,.1f} days"


def _every(step: int) -> str:
    if step == 1:
        return "every frame"
    nth = "th" if step % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(step % 10, "th")
    return f"every {step}{nth} frame"


def _spread(e: float) -> str:
    return f" (+-{e:.0%}, one standard error of the sample)" if e >= 0.005 else ""


def render(p: dict) -> str:
    """The plan as plain text: a few lines, then one row per GPU count."""
    c, r = p["corpus"], p["rate"]
    lines = [f"corpus: {c['videos']:,} videos ({c['source']}); the run trains on "
             f"{c['training_videos']:,}" + (f"; {c['probe_failed']} of the sample did not probe"
                                            if c["probe_failed"] else ""),
             f"clips: {p['clips_nominal']:,} (optim.epochs x optim.epoch_size, or x the training "
             "videos when epoch_size is 0)",
             f"student {p['student']['arch']}, clip {'x'.join(map(str, p['clip_shape']))}: "
             f"{_g(p['student']['train_flops_per_clip'])} per clip, forward + backward "
             "(counted by torch.utils.flop_counter)"]
    for t in p["teachers"]:
        lines.append(f"teacher {t['spec']}: {t['classes']} classes, {_g(t['flops'])} per frame"
                     + (f" [{t['note']}]" if t["note"] else ""))
    if p["teachers"]:
        live = p["live_teacher_frames_per_clip"]
        lines.append(f"live teacher frames per clip: {live}" if live else
                     "teachers: read from the target cache (distill.target_cache), not run")
    why = ("docs/SCALING.md: R(2+1)D-18 at 25% of an H100's bf16 peak"
           if r["clips_per_s_per_gpu"] == ASSUMED_RATE else "--clips-per-gpu without --measured")
    how = "(measured)" if r["measured"] else (
        f"ASSUMED, not measured ({why}); measure yours with `distinit bench --device cuda`, "
        "pass --clips-per-gpu R --measured")
    lines += [f"training step: {_g(p['flops_per_clip'])} per clip",
              f"rate: {r['clips_per_s_per_gpu']:,.0f} clips/s per GPU {how}",
              f"  = {r['h100_mfu']:.0%} of an H100's dense bf16 peak; ideal scaling, no "
              "communication cost", "",
              f"{'GPUs':>5} {'global batch':>13} {'steps/epoch':>12} {'steps':>10} {'clips':>14} "
              f"{'FLOPs':>12} {'GPU-hours':>10} {'wall time':>11}"]
    for run in p["runs"]:
        if not run["steps"]:
            lines.append(f"{run['gpus']:>5} {run['global_batch']:>13,}  refused: an epoch is "
                         "less than one global batch")
            continue
        lines.append(f"{run['gpus']:>5} {run['global_batch']:>13,} {run['steps_per_epoch']:>12,} "
                     f"{run['steps']:>10,} {run['clips']:>14,} {_g(run['flops']):>12} "
                     f"{run['gpu_hours']:>10,.1f} {_hours(run['wall_hours']):>11}")
    s = p["clip_store"]
    lines += ["", f"clip store (data.cache=store): {human_bytes(s['bytes'])}{_spread(s['rel_error'])}: "
              f"every frame at short side {s['resize'] or 'as decoded'}, uint8, of the corpus "
              "above" + ("" if c["exact"] else ", extrapolated from the probed sample")
              + ("" if s["config_codec"] == "raw" else
                                       f" (data.store_codec={s['config_codec']} is smaller: "
                                       "not estimated)")]
    t = p.get("target_cache")
    if t:
        kind = f"top-{t['topk']}" if t["dtype"] == "topk" else "float16"
        lines.append(f"target cache: {human_bytes(t['bytes'])}{_spread(t['rel_error'])}: "
                     f"{t['crops']} crops x {_every(t['frame_step'])} x classes, {kind}; "
                     f"building it runs the teachers on {t['teacher_frames']:,.0f} frames, "
                     f"{_g(t['build_flops'])}" + ("" if t["used"] else
                                                  " (this config runs its teachers live)"))
    return "\n".join(lines)


def _counts(text: str, flag: str) -> list[int]:
    parts = text.split(",")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"{flag} {text!r}: expected positive whole numbers separated by commas, "
                        "e.g. 8,16,64")
    return [int(p) for p in parts]


def main(argv: list[str]) -> int:
    """`distinit plan CONFIG.yaml [key=value ...] [--gpus 8,16,64] [--clips-per-gpu R]`."""
    parser = Parser(prog="distinit plan", description=__doc__.splitlines()[0])
    parser.add_argument("args", nargs="*", help="CONFIG.yaml [key=value ...]")
    parser.add_argument("--gpus", default="8,16,64", help="GPU counts to plan for")
    parser.add_argument("--clips-per-gpu", type=float, default=ASSUMED_RATE,
                        help="training clips/s one GPU sustains (default: an assumption)")
    parser.add_argument("--measured", action="store_true",
                        help="--clips-per-gpu was measured on your GPU, not assumed")
    parser.add_argument("--videos-sample", type=int, default=32,
                        help="videos of data.videos probed to estimate frame counts and sizes")
    parser.add_argument("--videos-per-corpus", type=int, help="describe the corpus instead of "
                        "probing data.videos: this many videos ...")
    parser.add_argument("--frames-per-video", type=int, help="... of this many frames ...")
    parser.add_argument("--frame-size", help="... of HEIGHTxWIDTH pixels as decoded, e.g. 240x320")
    parser.add_argument("--teacher-classes", help="class counts of the teachers whose weights "
                        "are not here, in distill.teachers order, e.g. 1000,365")
    parser.add_argument("--json", metavar="FILE", help="also write the plan as JSON")
    ns = parser.parse_intermixed_args(argv)
    gpus = _counts(ns.gpus, "--gpus")
    if ns.clips_per_gpu <= 0 or ns.videos_sample < 1:
        raise UserError("--clips-per-gpu and --videos-sample must be positive")
    classes = _counts(ns.teacher_classes, "--teacher-classes") if ns.teacher_classes else None
    cfg = config_from_args(ns.args, cls=any_config_class())
    if classes and len(classes) != len(cfg.distill.teachers):
        raise UserError(f"--teacher-classes gives {len(classes)} counts for "
                        f"{len(cfg.distill.teachers)} teachers (distill.teachers): give one each")
    corpus = corpus_of(cfg, ns.videos_per_corpus, ns.frames_per_video, ns.frame_size,
                       ns.videos_sample)
    p = plan(cfg, corpus, gpus, ns.clips_per_gpu, ns.measured, classes)
    print(render(p))
    if ns.json:
        Path(ns.json).write_text(json.dumps(p, indent=2) + "\n")
    return 0
