"""`distinit reproduce NAME`: one of the papers' experiments on the synthetic world, over seeds.

Each variant (`catalog.py`) pretrains a student (Res3D by default: R(2+1)D, the paper's ablation
model, costs twice as much per clip and would not fit 3 seeds in 15 minutes on 2 cores;
`--student r2plus1d`) with a registered method and the demo's recipe for it (`configs/demo/`:
`distill.yaml` for DistInit, `modist.yaml` for MoDist), or starts from scratch or from inflated
2D weights, changing only what the experiment is about; then it fine-tunes each student on split
1 with the demo's schedule. The world, its flow, the teachers (trained once, seed 0) and the
decoded-video cache are shared by every variant and seed. It prints a table with mean +- std over
seeds, says which of the papers' claims hold, and writes its section of OUT_DIR/REPRODUCTION.md
(or --doc FILE; the project's page is docs/REPRODUCTION.md) with the command and the wall time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path

from distinit.arguments import Parser
from distinit.engine import run_dir
from distinit.errors import UserError
from distinit.experiments import diagnostics, tables
from distinit.experiments.catalog import EXPERIMENTS
from distinit.experiments.experiment import SOURCES, STUDENTS, Context, Experiment, Variant
from distinit.experiments.parallel import OnDone, run_graph
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
    recipe_of,
    stage_tree,
    world_stage,
)
from distinit.jobs.evaluate import PREDICTIONS
from distinit.jobs.image_train import CHECKPOINT


def run_experiment(name: str, demo: DemoConfig, seeds: list[int], overwrite: bool = False,
                   student: str = "res3d", only: list[str] = ()) -> dict:
    """Every variant of experiment `name` (or those in `only`) over `seeds`; its table."""
    start = time.perf_counter()
    exp, ctx = run_variants(name, demo, seeds, overwrite, student, only)
    papers = {v.label: v.paper for v in exp.variants(ctx)}
    table = tables.summarize(name, exp, papers, ctx.results, seeds, time.perf_counter() - start)
    table["student"] = STUDENTS[student][0]
    table["notes"] = ctx.notes
    table["stats"] = ctx.stats
    if exp.render is not None:
        table["markdown"] = exp.render(ctx, seeds, demo)
    (ctx.out / "summary.json").write_text(json.dumps(table, indent=2))
    return table


def run_variants(name: str, demo: DemoConfig, seeds: list[int], overwrite: bool = False,
                 student: str = "res3d", only: list[str] = (),
                 on_done: OnDone | None = None) -> tuple[Experiment, Context]:
    """Run the variants (those in `only`, else all) of experiment `name` over `seeds`: the 2D
    networks they need first (trained once, seed 0, in OUT/shared), then every stage of every
    variant and seed in one graph. `on_done(stage, done, seconds)` as each stage finishes."""
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    out = Path(demo.out_dir)
    # Stages run side by side, `jobs` one-thread processes at a time (0: one per core).
    jobs = demo.jobs or len(os.sched_getaffinity(0))
    world = demo.world()
    shared = replace(demo, seed=0)  # the 2D networks: trained once, for every variant and seed
    done: dict[str, Done] = {}
    # The 2D networks' weights are where their stages will write them, so variants can name them.
    ctx = Context(world, out / name, out / "shared" / "teacher" / CHECKPOINT,
                  out / "shared" / "scene_net" / CHECKPOINT if exp.scenes else None, {})
    ctx.out.mkdir(parents=True, exist_ok=True)
    picked = [v for v in exp.variants(ctx) if not only or v.label in only]
    _train_2d(ctx, shared, done, {"teacher", *(["scene_net"] if exp.scenes else []),
                                  *(n for v in picked for n in v.needs())},
              overwrite, jobs, name, on_done)
    finished: list[str] = []
    while True:  # variants may depend on earlier results (entropy thresholds): rounds
        todo = [v for v in exp.variants(ctx)
                if v.label not in finished and (not only or v.label in only)]
        if not todo:
            break
        _train_2d(ctx, shared, done, {n for v in todo for n in v.needs()}, overwrite, jobs, name,
                  on_done)
        # Every stage of this round's variants and seeds in one graph, so that `jobs` processes
        # stay busy across variants; stages that variants share run once.
        stages = {s.name: s for v in todo for seed in seeds
                  for s in variant_stages(ctx, demo, v, seed, student)}
        run_graph(list(stages.values()), out, overwrite, done, jobs=jobs, log=name,
                  on_done=on_done)
        for v in todo:
            ctx.results[v.label] = [_report(name, v, seed, variant_result(
                ctx, demo, v, seed, student, done)) for seed in seeds]
            finished.append(v.label)
    unknown = sorted(set(only) - {v.label for v in exp.variants(ctx)})
    if unknown:
        raise UserError(f"{name} has no variant {unknown[0]!r}; its variants: "
                        f"{', '.join(v.label for v in exp.variants(ctx))}")
    if exp.after is not None and not only:
        ctx.results.update(exp.after(ctx))
    if exp.facts is not None:
        exp.facts(ctx)
    return exp, ctx


def _train_2d(ctx: Context, demo: DemoConfig, done: dict[str, Done], names: set[str],
              overwrite: bool, jobs: int, log: str, on_done: OnDone | None) -> None:
    """The shared 2D networks in `names` not yet done, side by side, in OUT/shared."""
    out = ctx.out.parent
    run_graph([image_stage(demo, ctx.world, out / "shared", n) for n in ["teacher", *SOURCES]
               if n in names and n not in done], out, overwrite, done, jobs=jobs, log=log,
              on_done=on_done)
    ctx.shared = {n: done[n] for n in ["teacher", *SOURCES] if n in done}


def variant_stages(ctx: Context, demo: DemoConfig, v: Variant, seed: int,
                   student: str) -> list[Stage]:
    """The variant's stages for one seed: the stages before its method, its method, the
    fine-tune. Each pretraining is kept in a folder named by the configs it resolves to, so
    experiments and variants that train the same thing share one run."""
    name, row = STUDENTS[v.student or student]
    arch = ARCH[name]
    runs = ctx.out.parent / "runs"
    stages: list[Stage] = []
    handed: list[str] = []  # the last earlier stage's backbone: part of what keys the next one
    for method, overrides in v.before:
        recipe = recipe_of(method)
        keyed = _with(demo, seed, recipe, [*overrides, *handed])
        run_out = runs / f"{method}-{_hash(stage_tree(keyed, recipe, method))}" / f"seed{seed}"
        stage = pretrain_stage(_with(demo, seed, recipe, overrides), ctx.world, method, arch,
                               run_out, ctx.teacher)
        stages.append(replace(stage, name=str(run_out), start=stages[-1].name if stages else ""))
        handed = ["model.init=checkpoint", f"model.weights={Path(stage.out) / 'last.pt'}"]
    run = replace(demo, seed=seed, overrides={**demo.overrides, "finetune": [
        *demo.overrides.get("finetune", []), *v.finetune]})
    recipe = recipe_of(v.method)
    keyed = _with(run, seed, recipe, [*v.overrides, *handed]) if v.method else run
    kind = "finetune" if v.method == "supervised" else v.method
    trees = ([stage_tree(keyed, recipe, kind)] if v.method else []) + [
        stage_tree(keyed, "finetune", "finetune")]
    if not v.method:
        trees.append({"init": v.init, **({"source": v.source} if v.needs() - {SOURCES[0]}
                                          else {})})
    if v.before:
        trees.append({"before": [[m, list(o)] for m, o in v.before]})
    if v.student:  # variants of several students share a graph (Table 1); keyed apart
        trees.append({"student": v.student})
    if v.method == "supervised":  # the videos it is judged on: those distillation holds out
        trees.append({"corpus_holdout": _corpus_holdout(run, ctx)})
    run_out = runs / _hash(trees) / f"seed{seed}"
    if v.method == "supervised":  # the corpus's hidden labels
        stage = supervised_stage(_with(run, seed, recipe, v.overrides), ctx, arch, run_out)
        stages.append(replace(stage, name=str(stage.out)))
    elif v.method:  # handed on by the engine (`start`), as the key above spells it
        stage = pretrain_stage(_with(run, seed, recipe, v.overrides), ctx.world, v.method, arch,
                               run_out, ctx.teacher)
        stages.append(replace(stage, name=str(stage.out), start=stages[-1].name if stages else ""))
    elif not stages:  # scratch, or a shared 2D network inflated
        stages.append(Stage(f"{run_out}:{v.init}", v.init,
                            start=v.source if v.init == "inflate" else ""))
    stages.append(replace(finetune_stage(run, ctx.world, arch, run_out, f"finetune_{row}",
                                         stages[-1].name), name=str(run_out / "finetune")))
    return stages


def supervised_stage(demo: DemoConfig, ctx: Context, arch: str, out: Path) -> Stage:
    """The upper bound: `arch` trained on the corpus's hidden labels (`supervised.yaml`), judged
    on the videos distillation holds out, so that both are judged on the same ones."""
    split = corpus_split(ctx.world, ctx.out, _corpus_holdout(demo, ctx))
    return world_stage(demo, f"{arch}_supervised", "finetune", "supervised",
                       out / f"{arch}_supervised",
                       ["data.format=csv", f"data.split_dir={split}", "data.video_root=",
                        cache(ctx.world), f"model.arch={arch}"])


def _corpus_holdout(demo: DemoConfig, ctx: Context) -> int:
    """How many corpus videos DistInit's recipe holds out (with the user's overrides)."""
    return stage_config(world_stage(demo, "-", "distinit", "distill", ctx.out)).distill.holdout


def _with(demo: DemoConfig, seed: int, recipe: str, overrides: list[str]) -> DemoConfig:
    """`demo` at `seed`, with `overrides` after the user's for `recipe`."""
    return replace(demo, seed=seed, overrides={
        **demo.overrides, recipe: [*demo.overrides.get(recipe, []), *overrides]})


def _report(name: str, v: Variant, seed: int, result: dict) -> dict:
    """Print a variant's seed's top-1 and its stages' diagnostics; `result` itself."""
    print(f"[{name}] {v.label}, seed {seed}: top-1 {result['top1']:.1f}"
          + (f", agreement {result['holdout_agree_t0']:.1f}%"
             if "holdout_agree_t0" in result else ""), flush=True)
    for stage in result["stages"]:
        print(f"[{name}] {v.label}, seed {seed}, {stage['stage']} stage: "
              f"{diagnostics.describe(stage['checks'])}", flush=True)
    return result


def variant_result(ctx: Context, demo: DemoConfig, v: Variant, seed: int, student: str,
                   done: dict[str, Done]) -> dict:
    """The results of a variant's seed whose stages have run (pretraining unless the variant
    has none, then the fine-tune on split 1)."""
    stages = variant_stages(ctx, demo, v, seed, student)
    stopped = [s.name for s in stages if s.name not in done or not done[s.name].finished]
    if stopped:
        raise UserError(f"{v.label}, seed {seed}: stage {stopped[0]} did not finish; run the "
                        "same command again to continue it")
    pre = next((done[s.name].result for s in reversed(stages[:-1])
                if s.kind not in ("scratch", "inflate")), {})
    ft = stages[-1]
    # Did each pretraining stage learn its own task? (diagnostics.py: from its metrics.jsonl)
    checked = [{"stage": s.kind, "checks": diagnostics.diagnose(s.out, s.kind)}
               for s in stages[:-1] if diagnostics.has_checks(s.kind)]
    result = {**pre, **done[ft.name].result,
              "predictions": str(Path(ft.out) / PREDICTIONS), "stages": checked}
    if "top1" in pre:  # a supervised pretraining's own test (held-out corpus videos)
        result["pretrain_top1"] = pre["top1"]
    if pre.get("corpus") and result.get("corpus"):  # the videos of both: the table shows them
        result["corpus"] = {"pretrain": pre["corpus"], **result["corpus"]}
    return result


def _hash(tree) -> str:
    """A short, stable name for a config tree (what a run folder is kept under)."""
    return hashlib.sha1(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:10]


def main(argv: list[str]) -> int:
    parser = Parser(prog="distinit reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(EXPERIMENTS))
    parser.add_argument("args", nargs="*", help="demo settings, e.g. out_dir=runs/reproduce")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--doc", default=None, help="Markdown page to update (default "
                        "OUT_DIR/RESULTS.md for table1, OUT_DIR/REPRODUCTION.md for the others; "
                        "the project's own are docs/RESULTS.md and docs/REPRODUCTION.md; '' for "
                        "none)")
    parser.add_argument("--student", choices=sorted(STUDENTS), default="res3d",
                        help="the distilled student (default res3d; the paper's ablations use "
                             "r2plus1d, twice the cost)")
    parser.add_argument("--only", action="append", default=[], metavar="VARIANT",
                        help="run only this variant (repeat for several; claims on rows that did "
                             "not run are left out)")
    parser.add_argument("--overwrite", action="store_true", help="train every run again")
    ns = parser.parse_intermixed_args(argv)
    # --seeds is checked as the demo's seeds= is: whole numbers in range, none twice.
    demo = parse_demo(["out_dir=runs/reproduce", *ns.args, f"seeds=[{ns.seeds}]"])
    seeds, demo = demo.seeds, replace(demo, seeds=[])
    if not seeds:
        raise UserError("--seeds lists no seed; give e.g. --seeds 0,1,2")
    if ns.doc is None:  # beside the runs, not under whatever folder the command ran from
        ns.doc = str(Path(demo.out_dir) / ("RESULTS.md" if ns.name == "table1" else
                                           "REPRODUCTION.md"))
    with run_dir.hold(demo.out_dir, "experiment"):
        table = run_experiment(ns.name, demo, seeds, ns.overwrite, ns.student, ns.only)
    command = "distinit reproduce " + " ".join([ns.name, *ns.args, f"--seeds {ns.seeds}",
                                                f"--student {ns.student}",
                                                *[f"--only '{v}'" for v in ns.only]])
    text = (f"    {command}\n\n{table['seconds'] / 60:.1f} min for the whole command (wall).\n\n"
            + table["markdown"]) if "markdown" in table else tables.markdown(table, command)
    print("\n" + text, flush=True)
    if ns.doc:
        # A run of some variants gets a section of its own beside the whole experiment's.
        section = ns.name if not ns.only else f"{ns.name}/{'|'.join(ns.only)}"
        tables.write_section(Path(ns.doc), section, text)
        print(f"wrote the {section} section of {ns.doc}")
    return 0
