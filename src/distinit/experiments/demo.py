"""`distinit demo`: the paper's Table 1 (distillation vs inflation vs scratch) on the synthetic world.

By default the three rows a newcomer needs (Res3D from scratch, ImageNet-analog inflated and
DistInit, one seed); `rows=[...]` picks others and `distinit reproduce table1` runs all seven
over seeds. Independent stages run side by side as one-thread processes (`jobs`, default one per
core; `experiments/parallel.py`), so a stage's numbers do not depend on what runs beside it.

Every row is a list of stages (`runner.Stage`) on a recipe from `configs/demo/` (YAML, the same
files a user runs with `distinit train-image | distill | finetune FILE.yaml`); the demo only fills
in the world's paths, the seed and the run folders:

1. the ResNet-50 analog teacher on the object stills (ImageNet's role), `teacher.yaml`;
2. a separate ResNet-18 analog on the same stills, the source that inflates one to one into
   Res3D, `inflation_source.yaml`, and one on the scene stills (Places' role), `scene_net.yaml`;
3. DistInit: the teacher distilled into Res3D and R(2+1)D on the unlabeled corpus, with the
   student's agreement with its teacher on held-out corpus clips, `distill.yaml`;
4. the upper bound: R(2+1)D trained with the corpus's hidden labels, `supervised.yaml`;
5. every initialisation judged frozen (kNN and linear probe) and fine-tuned on split 1 of the
   action set (HMDB-51's role) with one schedule, `finetune.yaml`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

from distinit.arguments import Parser
from distinit.engine import run_dir
from distinit.errors import UserError
from distinit.experiments import diagnostics, tables
from distinit.experiments.claims import Claim
from distinit.experiments.parallel import run_graph
from distinit.experiments.runner import Done, Stage, stage_config
from distinit.experiments.world import (
    ARCH,
    DemoConfig,
    cache,
    corpus_split,
    finetune_stage,
    image_stage,
    parse_demo,
    pretrain_stage,
    teacher_on_frames,
    world_stage,
)

# row -> (student, initialisation, how it is pretrained: a method, `supervised`, or the stage
# whose 2D network it inflates, or scratch)
ROWS = {
    "res3d_scratch": ("Res3D", "Scratch", "scratch"),
    "res3d_inflated": ("Res3D", "ImageNet-analog inflated (ResNet-18 analog)", "inflation_source"),
    "res3d_places_inflated": ("Res3D", "PlaceNet-analog inflated", "scene_net"),
    "res3d_distinit": ("Res3D", "DistInit (ours)", "distinit"),
    "r2plus1d_scratch": ("R(2+1)D", "Scratch", "scratch"),
    "r2plus1d_distinit": ("R(2+1)D", "DistInit (ours)", "distinit"),
    "r2plus1d_supervised": ("R(2+1)D", "Supervised pretraining on the corpus", "supervised"),
}
PAPER = {"res3d_scratch": 25.4, "res3d_inflated": 35.8, "res3d_places_inflated": 35.6,
         "res3d_distinit": 39.9, "r2plus1d_scratch": 24.1, "r2plus1d_distinit": 40.3,
         "r2plus1d_supervised": 51.0}  # Table 1, top-1 on HMDB-51 split 1
# The paper's orderings (`claims.py`: typed, one rule judges them).
# What `distinit demo` runs by default: the comparison a newcomer needs (`rows=` picks others;
# `distinit reproduce table1` runs all of ROWS over 3 seeds).
DEFAULT_ROWS = ("res3d_scratch", "res3d_inflated", "res3d_distinit")
CLAIMS = [
    Claim("DistInit beats scratch (Res3D)", "res3d_distinit", "res3d_scratch"),
    Claim("DistInit beats scratch (R(2+1)D)", "r2plus1d_distinit", "r2plus1d_scratch"),
    Claim("DistInit beats ImageNet inflation (Res3D)", "res3d_distinit", "res3d_inflated"),
    Claim("ImageNet inflation beats scratch (Res3D)", "res3d_inflated", "res3d_scratch"),
    Claim("ImageNet inflation at least matches PlaceNet inflation", "res3d_inflated",
          "res3d_places_inflated", "not_worse"),
    Claim("Supervised pretraining on the corpus beats DistInit (R(2+1)D)",
          "r2plus1d_supervised", "r2plus1d_distinit"),
]


def row_stages(demo: DemoConfig, world, out: Path, row: str) -> list[Stage]:
    """The stages of one row after the 2D networks: its pretraining, then its fine-tune."""
    arch, how = ARCH[ROWS[row][0]], ROWS[row][2]
    if how == "distinit":
        pre = pretrain_stage(demo, world, "distinit", arch, out, out / "teacher" / "teacher.pt")
    elif how == "supervised":
        # Held out: the videos distillation holds out, so both are judged on the same ones.
        holdout = stage_config(world_stage(demo, "-", "distinit", "distill", out)).distill.holdout
        split = corpus_split(world, out, holdout)
        pre = world_stage(demo, f"{arch}_supervised", "finetune", "supervised",
                          out / f"{arch}_supervised",
                          ["data.format=csv", f"data.split_dir={split}", "data.video_root=",
                           cache(world), f"model.arch={arch}"])
    else:
        pre = Stage(f"{row}_init", "inflate" if how != "scratch" else "scratch",
                    start=how if how != "scratch" else "")
    return [pre, finetune_stage(demo, world, arch, out, f"finetune_{row}", pre.name)]


def run_demo(demo: DemoConfig, overwrite: bool = False) -> dict:
    """The demo's table for one seed. Stages run in this process with `jobs=1` (`threads` torch
    threads, restored afterwards), else each in a one-thread process of its own."""
    import torch

    if demo.jobs == 0:
        demo = replace(demo, jobs=len(os.sched_getaffinity(0)))
    if demo.jobs > 1 and demo.threads == 0:
        demo = replace(demo, threads=1)  # every stage one thread, whether alone or side by side
    previous = torch.get_num_threads()
    if demo.jobs <= 1 and demo.threads > 0:
        torch.set_num_threads(demo.threads)
    try:
        return _run_demo(demo, overwrite)
    finally:
        torch.set_num_threads(previous)  # the caller's process keeps its own


def _run_demo(demo: DemoConfig, overwrite: bool) -> dict:
    rows = demo.rows or list(DEFAULT_ROWS)
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise UserError(f"unknown demo row {unknown[0]}; valid rows: {', '.join(ROWS)}")
    out = Path(demo.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    wall = time.perf_counter()
    world = demo.world()
    times["world"] = time.perf_counter() - wall
    print(world.summary(), flush=True)

    two_d = ["teacher", *[s for s in ("inflation_source", "scene_net")
                          if any(ROWS[r][2] == s for r in rows)]]
    plans = {row: row_stages(demo, world, out, row) for row in rows}
    stages = [image_stage(demo, world, out, name) for name in two_d]
    # Pretrainings first, then fine-tunes: with one process, the order the demo always ran in.
    stages += [pre for pre, _ in plans.values()] + [ft for _, ft in plans.values()]
    after = {pre.name: ("teacher",) for row, (pre, _) in plans.items()
             if ROWS[row][2] == "distinit"}
    stats: dict = {}
    table_rows: dict[str, dict] = {}
    row_of = {st.name: (row, i) for row, pair in plans.items() for i, st in enumerate(pair)}

    def report(stage: Stage, done: Done, seconds: float) -> None:
        if stage.name in two_d:
            times[stage.name] = seconds
            _report_2d(stage, done, world, stats, seconds)
        elif stage.name in row_of:
            row, i = row_of[stage.name]
            times[f"{'finetune' if i else 'pretrain'} {row}"] = seconds
            if i:
                table_rows[row] = _table_row(row, done.result)
            else:
                _report_pretraining(row, done.result, stats)

    run_graph(stages, out, overwrite, after=after, jobs=demo.jobs, log="demo", on_done=report)
    table = {"seed": demo.seed, "world_seed": demo.world_seed, "size": demo.size,
             "stats": {k: round(v, 2) for k, v in stats.items()},
             "rows": [table_rows[r] for r in rows if r in table_rows],
             "seconds": {k: round(v, 1) for k, v in times.items()},
             "wall_s": round(time.perf_counter() - wall, 1), "jobs": demo.jobs,
             "chance": round(100.0 / len(world.action_classes), 2)}
    text = tables.table1_markdown(table, [table], ROWS, PAPER, CLAIMS)
    # Did each pretraining stage learn its own task? (diagnostics.py, from its metrics.jsonl)
    checked = [{"variant": row, "stages": diagnostics.over_seeds(
        [[{"stage": pre.kind, "checks": diagnostics.diagnose(pre.out, pre.kind)}]])}
        for row, (pre, _) in plans.items() if diagnostics.has_checks(pre.kind)]
    if checked:
        text += "\n" + "\n".join(diagnostics.markdown(checked)) + "\n"
    (out / "table1.json").write_text(json.dumps(table, indent=2))
    (out / "table1.md").write_text(text)
    print("\n" + text, flush=True)
    if demo.figures:
        figures([out])
    return table


def _report_2d(stage: Stage, done: Done, world, stats: dict, seconds: float) -> None:
    name = stage.name
    key = "teacher_stills" if name == "teacher" else f"{name}_test"
    stats[key] = done.result.get("test_top1", float("nan"))
    if name == "teacher":
        stats["teacher_frames"] = teacher_on_frames(Path(done.weights), world, stage_config(stage))
        print(f"teacher (ResNet-50 analog): {stats['teacher_stills']:.1f}% on object stills "
              f"of unseen instances, {stats['teacher_frames']:.1f}% on frames of labeled "
              f"videos ({seconds:.0f} s)", flush=True)
    else:
        print(f"{name}: {stats[key]:.1f}% on unseen "
              f"{'scene' if name == 'scene_net' else 'object'} stills ({seconds:.0f} s)",
              flush=True)


def _report_pretraining(row: str, result: dict, stats: dict) -> None:
    if "holdout_agree_t0" in result:
        stats[f"{row}_agree"] = result["holdout_agree_t0"]
        stats[f"{row}_soft_loss"] = result["holdout_loss_t0"]
        stats[f"{row}_agree_clip"] = result["holdout_agree_clip_t0"]
        stats[f"{row}_ceiling"] = result["holdout_ceiling_t0"]
        print(f"{row}: agrees with the teacher's top class on {result['holdout_agree_t0']:.1f}% "
              f"of {result['holdout_videos']} held-out corpus clips (one random frame's; "
              f"the teacher's own frame-to-clip consistency caps this at "
              f"{result['holdout_ceiling_t0']:.1f}%), with its clip-level top class on "
              f"{result['holdout_agree_clip_t0']:.1f}% (soft-target loss "
              f"{result['holdout_loss_t0']:.3f})", flush=True)
    if ROWS[row][2] == "supervised":
        stats[f"{row}_corpus_test"] = result["top1"]
        print(f"{row}: {result['top1']:.1f}% top-1 on held-out corpus videos (final "
              f"training loss {result.get('train_loss') or float('nan'):.3f})", flush=True)


def _table_row(row: str, result: dict) -> dict:
    r = {"row": row, "model": ROWS[row][0], "init": ROWS[row][1],
         **{k: round(result[k], 2) for k in tables.DEMO_COLUMNS}}
    if result.get("corpus"):  # which videos the fine-tune read: shown under the table
        r["corpus"] = result["corpus"]
    print(f"{r['model']:8s} {r['init']:44s} clip {r['clip_acc']:5.1f}  top1 {r['top1']:5.1f}  "
          f"top5 {r['top5']:5.1f}  kNN-20 {r['knn20']:5.1f}  probe {r['probe']:5.1f}", flush=True)
    return r


def figures(run_dirs: list[Path]) -> None:
    """The paper's figures from these runs, in the first one's figures/ folder."""
    from distinit.optional import MissingDependency
    from distinit.tools.figures import make_figures

    try:
        made = make_figures(run_dirs, run_dirs[0].parent / "figures" if len(run_dirs) > 1
                            else run_dirs[0] / "figures")
    except MissingDependency as e:  # the table stands without its figures
        print(f"figures skipped: {e}", flush=True)
        return
    if made:
        print(f"figures: {', '.join(str(p) for p in made.values())}", flush=True)


def run_seeds(demo: DemoConfig, overwrite: bool = False) -> dict:
    """The demo once per seed (same world), then the mean and std of every number."""
    out = Path(demo.out_dir)
    world_dir = demo.world_dir or str(out / f"world-{demo.size}-{demo.world_seed}")
    runs = [run_demo(replace(demo, seed=s, seeds=[], out_dir=str(out / f"seed{s}"),
                             world_dir=world_dir, figures=False), overwrite)
            for s in demo.seeds]
    if len(runs) == 1:  # one seed's table is its own summary
        summary = {**runs[0], "seconds_per_seed": [runs[0]["wall_s"]]}
    else:
        summary = tables.table1_summary(demo, runs, ROWS, PAPER, CLAIMS)
    text = tables.table1_markdown(summary, runs, ROWS, PAPER, CLAIMS)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(text)
    print("\n" + text, flush=True)
    if demo.figures:
        figures([out / f"seed{s}" for s in demo.seeds])
    return summary


def main(argv: list[str]) -> int:
    parser = Parser(prog="distinit demo", description=__doc__.splitlines()[0])
    parser.add_argument("args", nargs="*", help="[key=value ...], e.g. seed=1 'distill=[...]'")
    parser.add_argument("--overwrite", action="store_true",
                        help="train every stage again instead of continuing the runs in out_dir")
    ns = parser.parse_intermixed_args(argv)
    demo = parse_demo(ns.args)
    with run_dir.hold(demo.out_dir, "demo"):
        run_seeds(demo, ns.overwrite) if demo.seeds else run_demo(demo, ns.overwrite)
    return 0
