"""`distinit bench`: throughput and peak memory of every stage of a distillation step, side by
side, in one run.

    distinit bench [--preset demo|full] [--arch A] [--clip-len T] [--crop S] [--batch B]
                   [--compile] [--device D] [--workers N] [--videos DIR]

Rows (clips/s, and the ratio to the student-only step):

- data only: decoding and transforms through the run's loader, no model (per worker too);
  with the decoded-clip store as well, when `--store` (the default);
- student step only: forward, backward and optimizer step on synthetic tensors;
- teacher only: the teachers on the frames they see, on synthetic tensors;
- distill, live teacher / cached targets: the full step (teacher or cache, student, loss,
  backward, step) on synthetic tensors: what the teacher or the cache adds to the step;
- end to end, live / cached: the real loader (videos or the clip store, the target cache) and
  the real step, with the share of the time the step waited on data;
- naive baseline: fp32, no channels_last, the teacher in the loop, decoding on the fly, a fresh
  DataLoader each epoch.

Everything is built by the code a run uses (`methods.distinit.build`, `train.make_loader`,
`train.accumulate`); the videos are written by the benchmark itself unless `--videos` names a
folder, and the teacher is an untrained ResNet-50 (throughput does not depend on its weights).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from distinit.arguments import Parser
from distinit.build import prepare_data, resolve_normalization
from distinit.config import Config, load_config
from distinit.data.video.io import list_videos, write_video
from distinit.engine import dist
from distinit.engine.runtime import Runtime
from distinit.engine.train import accumulate, build_optimizer, make_loader
from distinit.errors import UserError
from distinit.methods.distinit import build
from distinit.models.image_resnet import build_image_model
from distinit.models.teachers import teacher_checkpoint
from distinit.targets.cache import build_cache
from distinit.targets.frames import frame_indices
from distinit.tools.measure import PEAK_FLOPS, cpu_model, timed

PRESETS = {
    # the demo's Res3D student on the synthetic world's 32-px frames, its ResNet-50 (width 16)
    "demo": dict(arch="r3d_18", width=16, layers=[1, 1, 1, 1], stem_kernel=[3, 3], clip_len=8,
                 crop=32, resize=36, batch=64, frame=(32, 32), teacher_width=16,
                 teacher_size=0, classes=20),
    # R(2+1)D-18 on 8x112x112 clips of 320x240 video; a full ResNet-50 at 224 px
    "full": dict(arch="r2plus1d_18", width=64, layers=[], stem_kernel=[], clip_len=8, crop=112,
                 resize=128, batch=8, frame=(240, 320), teacher_width=64, teacher_size=224,
                 classes=1000),
}
def make_videos(folder: Path, count: int, frame: tuple[int, int], num_frames: int = 64) -> Path:
    """`count` H.264 videos (keyframe every 16 frames) of a panning texture with a moving
    square, each shifted in time so they differ."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = frame
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (max(h // 4, 1), max(2 * w // 4, 1), 3), dtype=np.uint8)
    texture = texture.repeat(4, 0).repeat(4, 1)[:h, :2 * w]
    for i in range(count):
        frames = np.stack([texture[:, (2 * (t + 7 * i)) % w:(2 * (t + 7 * i)) % w + w]
                           for t in range(num_frames)])
        s = max(h // 6, 2)
        for t in range(num_frames):
            y, x = (t + i) % (h - s), (3 * t + 5 * i) % (w - s)
            frames[t, y:y + s, x:x + s] = (255, 64, 0)
        write_video(folder / f"v{i:04d}.mp4", frames, fps=25, gop=16)
    return folder


def bench_config(args, preset: dict, videos: Path, teacher: Path, work: Path) -> Config:
    p = preset
    layers = f"[{','.join(map(str, p['layers']))}]" if p["layers"] else "[]"
    kernel = f"[{','.join(map(str, p['stem_kernel']))}]" if p["stem_kernel"] else "[]"
    overrides = [
        f"model.arch={args.arch or p['arch']}", f"model.width={p['width']}",
        f"model.layers={layers}", f"model.stem_kernel={kernel}",
        f"data.videos={videos}", f"data.clip_len={args.clip_len or p['clip_len']}",
        f"data.crop={args.crop or p['crop']}", f"data.resize={max(p['resize'], args.crop or 0)}",
        "data.mean=[0.45,0.45,0.45]", "data.std=[0.225,0.225,0.225]",
        f"data.num_workers={args.workers}", f"optim.batch_size={args.batch or p['batch']}",
        "optim.optimizer=sgd", "distill.holdout=0", f"distill.frames={args.frames}",
        f"distill.target_cache={work / 'targets'}", f"distill.cache_crops={args.cache_crops}",
        f"distill.cache_frame_step={args.cache_frame_step}",
        f'distill.teachers=[{{spec: "ckpt:{teacher}", input_size: {p["teacher_size"]}}}]',
        f"device={args.device}", f"precision={args.precision}", f"out_dir={work / 'run'}",
    ]
    return resolve_normalization(load_config(None, overrides))


def flops_per_clip(method, cfg: Config, device: torch.device) -> float:
    """FLOPs of one clip's training step (forward and backward of the student), counted."""
    from torch.utils.flop_counter import FlopCounterMode

    dc = cfg.data
    x = torch.randn(1, 3, dc.clip_len, dc.crop, dc.crop, device=device)
    with FlopCounterMode(display=False) as counter:
        sum(o.float().sum() for o in method.student(x)).backward()
    method.student.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def main(argv: list[str]) -> int:
    parser = Parser(prog="distinit bench", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--arch", default="", help="r3d_18 | r2plus1d_18 (default: preset's)")
    parser.add_argument("--clip-len", type=int, default=0)
    parser.add_argument("--crop", type=int, default=0)
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the student")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="loader worker processes (default: one per core)")
    parser.add_argument("--frames", default="random", choices=("center", "random", "multi"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the step rows (the median is shown)")
    parser.add_argument("--cache-crops", type=int, default=4, help="boxes per video cached")
    parser.add_argument("--cache-frame-step", type=int, default=1, help="cache every Nth frame")
    parser.add_argument("--videos", default="", help="a folder of videos (default: written here)")
    parser.add_argument("--num-videos", type=int, default=0,
                        help="videos to write (default: 8 batches, so an epoch is 8 steps)")
    parser.add_argument("--no-store", action="store_true", help="skip the clip-store rows")
    parser.add_argument("--work", default="", help="folder for videos, caches (default: temp)")
    parser.add_argument("--markdown", default="", help="also write the table to this file")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    ctx = dist.setup(args.device)
    if ctx.world > 1:
        raise UserError("distinit bench measures one process; run it without torchrun")
    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="distinit-bench-")))
        return _run(args, preset, work, ctx.device)


def _run(args, preset: dict, work: Path, device: torch.device) -> int:
    batch = args.batch or preset["batch"]
    work.mkdir(parents=True, exist_ok=True)
    teacher_file = work / "teacher.pt"
    if not teacher_file.is_file():
        torch.manual_seed(0)
        net = build_image_model("resnet50", num_classes=preset["classes"],
                                width=preset["teacher_width"])
        torch.save(teacher_checkpoint(net, "resnet50", preset["classes"],
                                      arch_kwargs={"width": preset["teacher_width"]}),
                   teacher_file)
    videos = Path(args.videos) if args.videos else work / "videos"
    if not args.videos and not any(videos.glob("*.mp4")):
        t = time.perf_counter()
        make_videos(videos, args.num_videos or 8 * batch, preset["frame"])
        print(f"wrote {args.num_videos or 8 * batch} videos in {time.perf_counter() - t:.0f} s")
    cfg = bench_config(args, preset, videos, teacher_file, work)
    rows: list[tuple[str, dict]] = []

    # --- the step on synthetic tensors -----------------------------------------------------
    live = build(replace(cfg, distill=replace(cfg.distill, target_cache="")))
    method = live.method
    rt = Runtime.of(cfg, device)
    rt.place(method, keep_layout=tuple(method.frozen))
    if args.compile:
        method.trainable = torch.compile(method.trainable)
    opt = build_optimizer(method.trainable, cfg.optim)
    dc = cfg.data
    T, S = dc.clip_len, dc.crop
    classes = method.targets.num_classes
    g = torch.Generator().manual_seed(0)
    synthetic = {"video": torch.randn(batch, 3, T, S, S, generator=g),
                 "rng_seed": torch.randint(0, 2**62, (batch,), generator=g),
                 **{f"teacher_logits{i}": torch.randn(batch, T, c, generator=g)
                    for i, c in enumerate(classes)}}
    live_batch = {k: v for k, v in synthetic.items() if not k.startswith("teacher_logits")}
    with rt.autocast(), torch.no_grad():
        prepared = method.prepare(rt.batch(synthetic))  # fixed targets for the student-only row

    def student_step() -> tuple[int, float]:
        with rt.autocast():
            loss = method(prepared)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return batch, 0.0

    def distill_step(b: dict) -> Callable[[], tuple[int, float]]:
        def step() -> tuple[int, float]:
            out, _ = accumulate(method, [b], dist.DistContext(0, 1, device), rt)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return batch, 0.0
        return step

    frames = rt.batch({"x": torch.rand(batch * method_frames(cfg, T), 3, S, S)})["x"]

    def teacher_only() -> tuple[int, float]:
        with rt.autocast(), torch.no_grad():
            for t in method.targets.teachers:
                t(frames)
        return batch, 0.0

    steps, warm = args.steps, args.warmup
    # Interleaved rounds, the median of each: a machine's drift hits every row alike.
    step_rows = {"student step only": student_step, "teacher only": teacher_only,
                 "distill, live teacher": distill_step(live_batch),
                 "distill, cached targets": distill_step(synthetic)}
    runs: dict[str, list[dict]] = {k: [] for k in step_rows}
    for r in range(args.rounds):
        for label, fn in step_rows.items():
            # one untimed step after switching rows: the first step of a row after another
            # network has run is slower (measured: 8% on the demo student)
            runs[label].append(timed(fn, steps, warm if r == 0 else 1, device))
    for label, results in runs.items():
        median = sorted(results, key=lambda x: x["clips_s"])[len(results) // 2]
        rows.append((label, {**median, "mem": max(x["mem"] for x in results)}))
    flops = flops_per_clip(method, cfg, device)

    # --- the data path ------------------------------------------------------------------------
    reused = (work / "targets" / "manifest.json").is_file()
    t = time.perf_counter()
    build_cache(cfg)
    cache_s = time.perf_counter() - t
    n_videos = len(list_videos(dc.videos, dc.extensions))
    cached = build(cfg)
    data_sources = [("decode", cfg)]
    if not args.no_store:
        store_cfg = replace(cfg, data=replace(dc, cache="store", cache_dir=str(work / "store")))
        t = time.perf_counter()
        prepare_data(store_cfg.data)  # builds the store
        store_set = build(store_cfg).dataset
        store_s = time.perf_counter() - t
        data_sources.append(("clip store", store_cfg))
    # Loader rows run one after another, each past its loader's start-up: the warm-up drains
    # what the workers prefetched while nothing read (4 batches each), so the timed steps are
    # the steady state.
    fill = 4 * args.workers + warm
    for name, c in data_sources:
        ds = cached.dataset if name == "decode" else store_set
        it = _cycle(_loader(ds, c, device))
        result = timed(lambda it=it: (len(next(it)["video"]), 0.0), 4 * steps, fill, device)
        result["per_core"] = result["clips_s"] / max(c.data.num_workers, 1)
        rows.append((f"data only, {name} ({c.data.num_workers} workers)", result))
        del it

    # --- end to end: the loader and the step together ----------------------------------------
    for name, c in data_sources:
        ds = cached.dataset if name == "decode" else store_set
        rows.append((f"end to end, cached targets, {name}",
                     timed(_loop(method, opt, _cycle(_loader(ds, c, device)), rt, device),
                           2 * steps, fill, device)))
    rows.append(("end to end, live teacher, decode",
                 timed(_loop(method, opt, _cycle(_loader(live.dataset, cfg, device)), rt, device),
                       2 * steps, fill, device)))
    # The naive baseline: a student of its own, fp32, default memory format, the teacher in the
    # loop, and a fresh DataLoader (new worker processes) every epoch.
    naive = build(replace(cfg, distill=replace(cfg.distill, target_cache="")))
    naive_rt = Runtime(device, None, False)
    naive_rt.place(naive.method)
    naive_opt = build_optimizer(naive.method.trainable, cfg.optim)
    epoch = max(len(naive.dataset) // cfg.optim.batch_size, 1)  # a whole number of epochs:
    span = epoch * max(round(2 * steps / epoch), 1)  # each start of the loader counted alike
    rows.append(("naive baseline", timed(
        _loop(naive.method, naive_opt, _fresh_each_epoch(naive.dataset, cfg), naive_rt, device),
        span, warm, device)))

    table = _table(rows, args, cfg, device, flops)
    built = "checked (built by an earlier run)" if reused else "built"
    extra = (f"\ntarget cache: {n_videos} videos {built} in {cache_s:.1f} s "
             f"({n_videos / cache_s:.1f} videos/s, {_size(work / 'targets')}, "
             f"{cfg.distill.cache_crops} boxes, every {cfg.distill.cache_frame_step} frame(s))")
    if not args.no_store:
        extra += (f"; clip store: {store_s:.1f} s ({n_videos / store_s:.1f} videos/s, "
                  f"{_size(work / 'store')})")
    print(table + extra)
    if args.markdown:
        Path(args.markdown).write_text(table + extra + "\n")
    return 0


def method_frames(cfg: Config, length: int) -> int:
    """How many frames of a clip the teachers see (as `TeacherTargets` picks them)."""
    return frame_indices(1, length, cfg.distill.frames, cfg.distill.num_frames).shape[1]


def _loader(dataset, cfg: Config, device: torch.device) -> DataLoader:
    return make_loader(dataset, cfg, RandomSampler(dataset, generator=torch.Generator()
                                                   .manual_seed(0)), device)


def _cycle(loader):
    while True:
        yield from loader


def _fresh_each_epoch(dataset, cfg: Config):
    """The naive loader: workers started again every epoch, nothing pinned or prefetched extra."""
    while True:
        yield from DataLoader(dataset, batch_size=cfg.optim.batch_size, shuffle=True,
                              drop_last=True, num_workers=cfg.data.num_workers)


def _loop(method, opt, batches, rt: Runtime, device: torch.device):
    def step() -> tuple[int, float]:
        t = time.perf_counter()
        b = next(batches)
        waited = time.perf_counter() - t
        accumulate(method, [b], dist.DistContext(0, 1, device), rt)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return len(b["video"]), waited
    return step


def _size(folder: Path) -> str:
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return f"{total / 2**20:.1f} MiB"


def _table(rows, args, cfg: Config, device: torch.device, flops: float) -> str:
    base = dict(rows)["student step only"]["clips_s"]
    rt = Runtime.of(cfg, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), 0.0)
    dc = cfg.data
    lines = [
        f"distinit bench --preset {args.preset}: {cfg.model.arch} width {cfg.model.width}, "
        f"{dc.clip_len}x{dc.crop}x{dc.crop} clips, batch {cfg.optim.batch_size}, "
        f"{'bf16' if rt.amp_dtype else 'fp32'}, channels_last {'on' if rt.channels_last else 'off'}"
        f", compile {'on' if args.compile else 'off'}, teacher ResNet-50 (width "
        f"{PRESETS[args.preset]['teacher_width']}) on {method_frames(cfg, dc.clip_len)} frame(s) "
        f"per clip, {args.workers} loader workers",
        f"device: {device.type} ({name}), {os.cpu_count()} cores, torch {torch.__version__}; "
        f"{flops / 1e9:.2f} GFLOP per clip per training step (counted)",
        "",
        "| stage | clips/s | x student step | peak memory | waiting on data | per core |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in rows:
        mem = f"{r['mem'] / 2**20:.0f} MiB" + (" (RSS)" if device.type == "cpu" else "")
        wait = f"{100 * r['wait']:.0f}%" if label.startswith(("end", "naive")) else ""
        per_core = f"{r['per_core']:.1f}" if "per_core" in r else ""
        lines.append(f"| {label} | {r['clips_s']:.1f} | {r['clips_s'] / base:.2f}x | {mem} | "
                     f"{wait} | {per_core} |")
    if peak:
        best = dict(rows)["distill, cached targets"]["clips_s"]
        lines.append(f"\nMFU of the cached distill step: {100 * best * flops / peak:.1f}% of "
                     f"{peak / 1e12:.0f} TFLOP/s")
    return "\n".join(lines)
