"""`distinit reproduce NAME`: one of the papers' experiments on the synthetic world, over seeds.

Each variant pretrains a student (Res3D by default: R(2+1)D, the paper's ablation model, costs
twice as much per clip and would not fit 3 seeds in 15 minutes on 2 cores; `--student r2plus1d`)
with a registered method and the demo's recipe for it (`configs/demo/`: `distill.yaml` for
DistInit, `modist.yaml` for MoDist), or starts from scratch or from inflated 2D weights, changing
only what the experiment is about; then it fine-tunes each student on split 1 with the demo's
schedule. The world, its flow, the teachers (trained once, seed 0) and the decoded-video cache
are shared by every variant and seed. It prints a table with mean +- std over seeds, says which
of the papers' claims hold, and writes its section of docs/REPRODUCTION.md (or --doc) with the
command and the wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from distinit.build import init_student, input_channels, labeled_split, make_student
from distinit.checkpoint import load_checkpoint, model_state
from distinit.config import Config, config_from_args, load_config, to_dict
from distinit.data.synth import World, generate_world
from distinit.data.synth.flow import world_flow
from distinit.data.synth.world import with_overrides
from distinit.demo import ARCH, ROWS, DemoConfig, finetune_row, pretrain, stage_config, train_2d
from distinit.errors import UserError
from distinit.evaluate import PREDICTIONS, fuse
from distinit.methods import config_class
from distinit.optional import MissingDependency
from distinit.run import pretrain as run_pretrain

STUDENTS = {"res3d": "res3d_distinit", "r2plus1d": "r2plus1d_distinit"}


@dataclass
class Variant:
    label: str
    overrides: list[str] = field(default_factory=list)  # pretraining-stage overrides
    paper: float | None = None  # the paper's top-1 for this setting, where it has one
    method: str = "distinit"  # the pretraining method (its recipe: configs/demo/STAGE.yaml)...
    init: str = "scratch"  # ... or none (""): fine-tune from `scratch` or `inflate`d 2D weights
    finetune: list[str] = field(default_factory=list)  # fine-tune-stage overrides
    # Stages run before the method, each handing its backbone on: (method, overrides). Each is
    # kept by its own config, so variants that start alike (auxSKD, then a pretext) share it.
    before: list[tuple[str, list[str]]] = field(default_factory=list)


# a method's recipe in configs/demo/
STAGE = {"distinit": "distill", "modist": "modist", "auxskd": "auxskd", "vspp": "vspp",
         "pace": "pace", "vcop": "vcop"}


@dataclass
class Context:
    """What variants may depend on: the world, the shared teachers, earlier results."""

    world: World
    out: Path
    teacher: Path
    scene_net: Path | None
    results: dict[str, list[dict]]  # label -> one result per seed, filled as variants finish
    inflation_source: Path | None = None  # the ResNet-18 analog, for inflated variants
    notes: list[str] = field(default_factory=list)  # lines under the table's heading

    def flow(self, which: str) -> list[str]:
        """Settings that point a stage at the world's flow of `which` (corpus or actions),
        computed on first use."""
        videos = self.world.corpus_dir if which == "corpus" else self.world.actions_videos
        return [f"data.flow_dir={world_flow(self.world)[which]}", f"data.flow_root={videos}"]


@dataclass
class Experiment:
    paper: str
    what: str
    variants: Callable[[Context], list[Variant]]
    claims: list[tuple[str, str, str]]  # (claim, better label, worse label)
    # After every variant has run: more rows ({label: one result per seed}) from their runs.
    after: Callable[[Context], dict[str, list[dict]]] | None = None
    scenes: bool = False  # needs the scene network (PlaceNet's analog)


def _frames(ctx: Context) -> list[Variant]:
    return [Variant("centre frame", ["distill.frames=center"], 40.3),
            Variant("random frame", ["distill.frames=random"], 43.2),
            Variant("2 random frames", ["distill.frames=multi", "distill.num_frames=2"], 44.0)]


def _loss(ctx: Context) -> list[Variant]:
    base = DemoConfig()
    lr = _distill_lr(base) / 10
    return [Variant("soft-target CE", ["distill.loss=ce"], 40.3),
            Variant("MSE on logits (lr / 10)", ["distill.loss=mse", f"optim.lr={lr:g}"], 39.9)]


def _entropy(ctx: Context) -> list[Variant]:
    """Keep all, then thresholds that drop 25 / 50 / 75% of the held-out clips' targets (the
    teacher's entropies measured by the keep-all run of the first seed)."""
    out = [Variant("keep all", ["distill.max_entropy=0"], 40.3)]
    done = ctx.results.get("keep all")
    if not done:
        return out
    entropies = torch.tensor(done[0]["entropies"][0])
    for drop in (0.25, 0.5, 0.75):
        threshold = torch.quantile(entropies, 1 - drop).item()
        out.append(Variant(f"drop {drop:.0%} (entropy > {threshold:.3f})",
                           [f"distill.max_entropy={threshold:.6f}"]))
    return out


def _teachers(ctx: Context) -> list[Variant]:
    t, s = f"{{spec: 'ckpt:{ctx.teacher}'}}", f"{{spec: 'ckpt:{ctx.scene_net}'}}"
    return [Variant("objects (ImageNet analog)", [f"distill.teachers=[{t}]"], 40.3),
            Variant("scenes (Places analog)", [f"distill.teachers=[{s}]"], 36.8),
            Variant("both (Eq. 3)", [f"distill.teachers=[{t}, {s}]"])]


def _temperature(ctx: Context) -> list[Variant]:
    return [Variant(f"tau = {t}", [f"distill.temperature={t}"]) for t in (1, 2, 4)]


def _data(ctx: Context) -> list[Variant]:
    """Corpus size at a fixed number of training clips, a second corpus, and the union."""
    videos = sorted(map(str, ctx.world.corpus_videos))
    second = generate_world(ctx.out / "second-world", seed=ctx.world.seed + 1,
                            size=with_overrides(ctx.world.size, corpus_background=0.4,
                                                scene_bias=0.0))
    lists = {"25%": videos[: len(videos) // 4], "50%": videos[: len(videos) // 2],
             "100%": videos, "second": sorted(map(str, second.corpus_videos))}
    lists["union"] = lists["100%"] + lists["second"]
    files = {name: _video_list(ctx, name.rstrip("%"), items) for name, items in lists.items()}
    size = f"optim.epoch_size={len(videos)}"  # every variant trains on as many clips
    return [Variant("first corpus, 25%", [f"data.videos={files['25%']}", size]),
            Variant("first corpus, 50%", [f"data.videos={files['50%']}", size]),
            Variant("first corpus, 100%", [f"data.videos={files['100%']}", size], 40.3),
            Variant("second corpus (more background, no scene bias)",
                    [f"data.videos={files['second']}", size], 39.9),
            Variant("union of both", [f"data.videos={files['union']}", size], 41.8)]


FLOW_STUDENT = ["data.input=flow"]


def _flow(ctx: Context) -> list[Variant]:
    """Table 5: a flow student from scratch, mean-inflated from the ResNet-18 analog, and
    DistInit (the student sees flow, the teacher a random RGB frame of the same clip); the RGB
    DistInit student, for the two-stream fusion."""
    ft = [*FLOW_STUDENT, *ctx.flow("actions")]
    return [Variant("flow, scratch", method="", init="scratch", finetune=ft, paper=38.7),
            Variant("flow, mean-inflated", method="", init="inflate", finetune=ft, paper=43.9),
            Variant("flow, DistInit", [*FLOW_STUDENT, *ctx.flow("corpus")], finetune=ft,
                    paper=49.2),
            Variant("RGB, DistInit")]


def _fusion(ctx: Context) -> dict[str, list[dict]]:
    """Late fusion (mean softmax) of the RGB and flow DistInit students, per seed."""
    rows = []
    for rgb, flow in zip(ctx.results["RGB, DistInit"], ctx.results["flow, DistInit"], strict=True):
        rows.append(fuse([rgb["predictions"], flow["predictions"]]))
    return {"two-stream: RGB + flow DistInit (late fusion)": rows}


def _attribution(ctx: Context) -> dict[str, list[dict]]:
    """Grad-CAM of every variant's pretrained encoder (target: its own embedding) and of its
    fine-tuned network (target: the true class) on split 1's test videos, against the objects'
    masks: `in_mask` and `in_mask_ft` of each run, and a picture of seed 0's maps."""
    from distinit.attribution import attribution, picture, world_clips

    clips, maps = None, {}
    for label, results in ctx.results.items():
        for i, result in enumerate(results):  # one per seed
            folder = Path(result["predictions"]).parent
            cfg = load_config(folder / "config.yaml")
            test = labeled_split(cfg.data, "test")
            if clips is None:
                d = cfg.data
                clips = world_clips(ctx.world, test.videos, test.labels, d.clip_len, d.stride,
                                    d.resize, d.crop, d.mean, d.std)
            pre = make_student(cfg.model, num_classes=0, in_channels=input_channels(cfg.data))
            init_student(pre, cfg.model)
            tuned = make_student(cfg.model, len(test.classes), input_channels(cfg.data))
            tuned.load_state_dict(model_state(load_checkpoint(folder / "last.pt")))
            a, b = attribution(pre, clips, fine_tuned=False), attribution(tuned, clips, True)
            result.update(in_mask=a["in_mask"], pointing=a["pointing"], in_mask_ft=b["in_mask"],
                          pointing_ft=b["pointing"])
            if i == 0:
                maps[label] = a["maps"]
    area = torch.stack([c.mask.mean() for c in clips]).mean().item() * 100
    ctx.notes.append(f"Grad-CAM at {a['layer']} over the {len(clips)} test videos' centre clips "
                     "(%): the share of each map's mass on the object, and of frames where it "
                     f"peaks on the object. The objects cover {area:.1f}% of the pixels, what a "
                     "network blind to them would score on both.")
    shown = [next(i for i, c in enumerate(clips) if c.label == k)
             for k in sorted({c.label for c in clips})[:6]]
    try:
        path = picture([clips[i] for i in shown], {k: [m[i] for i in shown] for k, m in maps.items()},
                       ctx.out / "attribution.png")
        ctx.notes.append(f"Maps of the pretrained encoders (seed 0): `{path}`.")
    except MissingDependency as e:
        ctx.notes.append(f"No picture: {e}")
    return {}


def _modist(ctx: Context) -> list[Variant]:
    """MoDist against its RGB-only contrastive ablation, DistInit and scratch; then DistInit's
    loss added to MoDist's (one config)."""
    flow = ctx.flow("corpus")
    teacher = f"distill.teachers=[{{spec: 'ckpt:{ctx.teacher}'}}]"
    return [Variant("scratch", method="", init="scratch"),
            Variant("RGB-only contrastive", ["modist.motion=false"], method="modist"),
            Variant("MoDist", flow, method="modist"),
            Variant("DistInit", []),
            Variant("MoDist + DistInit loss", [*flow, teacher, "distill.max_entropy=0",
                                                      "modist.distill_weight=1"],
                    method="modist")]


def _video_list(ctx: Context, name: str, videos: list[str]) -> Path:
    path = ctx.out / f"corpus_{name}.txt"
    path.write_text("\n".join(videos) + "\n")
    return path


TASKS = {"vspp": "VSPP", "vcop": "VCOP", "pace": "pace prediction"}


def _auxskd(ctx: Context) -> list[Variant]:
    """auxSKD's setting: a SMALL unlabeled corpus (a quarter of the world's), each pretext task
    alone and after the auxSKD stage, then DistInit and MoDist on the same quarter, and scratch.
    Every pretraining stage sees as many clips as one pass over the whole corpus per epoch, so
    the corpus is small, not the compute."""
    videos = sorted(map(str, ctx.world.corpus_videos))
    data = [f"data.videos={_video_list(ctx, '25', videos[: len(videos) // 4])}",
            f"optim.epoch_size={len(videos)}"]
    aux = ("auxskd", data)
    out = []
    for task, label in TASKS.items():
        out += [Variant(label, data, method=task),
                Variant(f"auxSKD + {label}", data, method=task, before=[aux])]
    return [*out, Variant("auxSKD alone", method="", before=[aux]), Variant("DistInit", data),
            Variant("MoDist", [*ctx.flow("corpus"), *data], method="modist"),
            Variant("scratch", method="", init="scratch")]


def _cache(ctx: Context) -> list[Variant]:
    """Live teachers against their targets cached once (FKD's trade: the student sees only the
    cached crop boxes of each video): 8 and 2 boxes in float16, 8 boxes keeping the top 5 of
    the teacher's 20 logits. Each cache is built by the first seed's run and shared."""
    folder = ctx.out / "targets"
    return [Variant("live teachers", []),
            Variant("cached, 8 boxes", [f"distill.target_cache={folder}-8",
                                        "distill.cache_crops=8"]),
            Variant("cached, 2 boxes", [f"distill.target_cache={folder}-2",
                                        "distill.cache_crops=2"]),
            Variant("cached, 8 boxes, top-5", [f"distill.target_cache={folder}-8-top5",
                                               "distill.cache_crops=8", "distill.cache_dtype=topk",
                                               "distill.cache_topk=5"])]


EXPERIMENTS = {
    "frames": Experiment("Table 2", "which frames the teacher sees", _frames,
                         [("a random frame beats the centre frame", "random frame", "centre frame"),
                          ("2 random frames beat 1", "2 random frames", "random frame")]),
    "loss": Experiment("Table 3", "soft-target cross-entropy vs MSE on logits", _loss,
                       [("cross-entropy beats MSE", "soft-target CE", "MSE on logits (lr / 10)")]),
    "entropy": Experiment("Fig. 6", "dropping clips whose teacher targets are uncertain", _entropy,
                          [("dropping about 50% holds or helps",
                            "drop 50%", "keep all")]),
    "data": Experiment("Table 4", "corpus size, a second corpus and their union", _data,
                       [("more data helps (100% vs 25%)", "first corpus, 100%", "first corpus, 25%"),
                        ("the union beats the first corpus", "union of both", "first corpus, 100%")]),
    "teachers": Experiment("Sec. 4.3", "object teacher, scene teacher, both", _teachers,
                           [("objects teach actions better than scenes",
                             "objects (ImageNet analog)", "scenes (Places analog)")],
                           scenes=True),
    "temperature": Experiment("beyond the paper", "softmax temperature of the targets",
                              _temperature, []),
    "flow": Experiment("Table 5", "a flow student: scratch, mean-inflated, DistInit", _flow,
                       [("DistInit beats mean inflation for flow", "flow, DistInit",
                         "flow, mean-inflated"),
                        ("mean inflation beats scratch for flow", "flow, mean-inflated",
                         "flow, scratch"),
                        ("fusing RGB and flow beats RGB alone", "two-stream", "RGB, DistInit")],
                       after=_fusion),
    "modist": Experiment("MoDist", "motion distillation vs RGB-only contrastive, DistInit, "
                         "scratch", _modist,
                         [("MoDist beats RGB-only contrastive", "MoDist", "RGB-only contrastive"),
                          ("MoDist beats scratch", "MoDist", "scratch"),
                          ("DistInit beats MoDist", "DistInit", "MoDist"),
                          ("adding DistInit's loss helps MoDist", "MoDist + DistInit loss",
                           "MoDist")],
                         after=_attribution),
    "cache": Experiment("FKD", "teacher targets cached once vs live teachers", _cache,
                        [("live teachers beat cached targets (8 boxes)", "live teachers",
                          "cached, 8 boxes"),
                         ("8 cached boxes beat 2", "cached, 8 boxes", "cached, 2 boxes"),
                         ("float16 beats top-5", "cached, 8 boxes", "cached, 8 boxes, top-5")]),
    "auxskd": Experiment("auxSKD", "auxSKD before VSPP, VCOP and pace prediction on a small "
                         "corpus, against DistInit and MoDist", _auxskd,
                         [("auxSKD + VSPP beats VSPP alone", "auxSKD + VSPP", "VSPP"),
                          ("auxSKD improves VCOP", "auxSKD + VCOP", "VCOP"),
                          ("auxSKD improves pace prediction", "auxSKD + pace prediction",
                           "pace prediction"),
                          ("VSPP beats scratch", "VSPP", "scratch"),
                          ("auxSKD + VSPP beats DistInit", "auxSKD + VSPP", "DistInit"),
                          ("auxSKD + VSPP beats MoDist", "auxSKD + VSPP", "MoDist")]),
}


def _distill_lr(demo: DemoConfig) -> float:
    return stage_config(demo, "distill", Path("unused"), []).optim.lr


def run_experiment(name: str, demo: DemoConfig, seeds: list[int], overwrite: bool = False,
                   student: str = "res3d") -> dict:
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    start = time.perf_counter()
    out = Path(demo.out_dir)
    world_dir = Path(demo.world_dir or out.parent / f"world-{demo.size}-{demo.world_seed}")
    world = generate_world(world_dir, seed=demo.world_seed, size=demo.size)
    shared = replace(demo, seed=0)
    teacher, _ = train_2d(shared, world, out / "shared", "teacher", overwrite)
    scene_net = (train_2d(shared, world, out / "shared", "scene_net", overwrite, scenes=True)[0]
                 if exp.scenes else None)
    ctx = Context(world, out / name, teacher, scene_net, {})
    ctx.out.mkdir(parents=True, exist_ok=True)
    done: list[str] = []
    while True:  # variants may depend on earlier results (entropy thresholds)
        todo = [v for v in exp.variants(ctx) if v.label not in done]
        if not todo:
            break
        v = todo[0]
        if not v.method and v.init == "inflate" and ctx.inflation_source is None:
            ctx.inflation_source, _ = train_2d(shared, world, out / "shared", "inflation_source",
                                               overwrite)
        ctx.results[v.label] = []
        for seed in seeds:
            result = run_variant(ctx, demo, v, seed, student, overwrite)
            ctx.results[v.label].append(result)
            print(f"[{name}] {v.label}, seed {seed}: top-1 {result['top1']:.1f}"
                  + (f", agreement {result['holdout_agree_t0']:.1f}%"
                     if "holdout_agree_t0" in result else ""), flush=True)
        done.append(v.label)
    if exp.after is not None:
        ctx.results.update(exp.after(ctx))
    variants = {v.label: v for v in exp.variants(ctx)}
    table = summarize(name, exp, variants, ctx.results, seeds, time.perf_counter() - start)
    table["student"] = ROWS[STUDENTS[student]][0]
    table["notes"] = ctx.notes
    (ctx.out / "summary.json").write_text(json.dumps(table, indent=2))
    return table


def run_variant(ctx: Context, demo: DemoConfig, v: Variant, seed: int, student: str,
                overwrite: bool) -> dict:
    """Pretrain (unless the variant has no method), then fine-tune on split 1: the results."""
    handed: list[str] = []  # the last earlier stage's backbone, as the next one's init
    earlier, pre = "", {}
    for method, overrides in v.before:
        earlier, pre = _pretrain_stage(ctx, demo, method, [*overrides, *handed], seed, student,
                                       overwrite)
        handed = ["model.init=checkpoint", f"model.weights={earlier}"]
    stage = STAGE.get(v.method)
    run = replace(demo, seed=seed, finetune=[*demo.finetune, *v.finetune])
    if stage:
        run = replace(run, **{stage: [*getattr(demo, stage), *v.overrides, *handed]})
    # Runs are kept by what they train, so experiments share identical ones (the recipe itself
    # is a variant of several) and a second command reloads them.
    run_out = ctx.out.parent / "runs" / _recipe_key(run, v) / f"seed{seed}"
    run = replace(run, out_dir=str(run_out))
    row = STUDENTS[student]
    if v.method == "distinit":
        _, weights, pre = pretrain(run, ctx.world, run_out, row, ctx.teacher, {}, overwrite)
        init = "checkpoint"
    elif v.method:
        init, weights, pre = _pretrain_method(ctx, run, v.method, run_out, row, overwrite)
    else:
        init, weights = v.init, str(ctx.inflation_source) if v.init == "inflate" else ""
        if earlier:  # the last earlier stage is the initialisation
            init, weights = "checkpoint", earlier
    result = finetune_row(run, ctx.world, run_out, row, init, weights, overwrite)
    return {**pre, **result, "predictions": str(run_out / f"finetune_{row}" / PREDICTIONS)}


def _pretrain_stage(ctx: Context, demo: DemoConfig, method: str, overrides: list[str], seed: int,
                    student: str, overwrite: bool) -> tuple[str, dict]:
    """An earlier stage of a variant, in a folder of its own config: (its last.pt, results)."""
    stage = STAGE[method]
    run = replace(demo, seed=seed, **{stage: [*getattr(demo, stage), *overrides]})
    tree = to_dict(stage_config(run, stage, Path("."), [], cls=config_class(method)))
    tree.pop("out_dir")
    run_out = ctx.out.parent / "runs" / f"{method}-{_hash(tree)}" / f"seed{seed}"
    _, weights, result = _pretrain_method(ctx, replace(run, out_dir=str(run_out)), method,
                                          run_out, STUDENTS[student], overwrite)
    return weights, result


def _pretrain_method(ctx: Context, run: DemoConfig, method: str, run_out: Path, row: str,
                     overwrite: bool) -> tuple[str, str, dict]:
    """A registered method other than DistInit on the corpus, with its demo recipe."""
    arch = ARCH[ROWS[row][0]]
    cfg = stage_config(run, STAGE[method], run_out / f"{arch}_{method}",
                       [f"data.videos={ctx.world.corpus_dir}",
                        f"data.cache_dir={ctx.world.root / 'cache'}", f"model.arch={arch}"],
                       cls=config_class(method))
    restart = not overwrite and (Path(cfg.out_dir) / "last.pt").is_file()
    result = run_pretrain(cfg, method, resume=restart, overwrite=overwrite)
    return "checkpoint", str(Path(cfg.out_dir) / "last.pt"), result


def _recipe_key(demo: DemoConfig, v: Variant) -> str:
    """A short hash of the configs a run resolves to (pretraining, fine-tuning; paths aside)."""
    stages = ([STAGE[v.method]] if v.method else []) + ["finetune"]
    trees = [to_dict(stage_config(demo, stage, Path("."), [],
                                  cls=config_class(v.method) if stage != "finetune" else Config))
             for stage in stages]
    for tree in trees:
        tree.pop("out_dir")
    if not v.method:
        trees.append({"init": v.init})
    if v.before:
        trees.append({"before": [[m, list(o)] for m, o in v.before]})
    return _hash(trees)


def _hash(tree) -> str:
    """A short, stable name for a config tree (what a run folder is kept under)."""
    return hashlib.sha1(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:10]


def _mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(values) > 1 else 0.0)


def summarize(name: str, exp: Experiment, variants: dict[str, Variant],
              results: dict[str, list[dict]], seeds: list[int], seconds: float) -> dict:
    rows = []
    for label, rs in results.items():
        rows.append({"variant": label, "paper": variants[label].paper if label in variants else None,
                     **{k: _mean_std([r.get(k, math.nan) for r in rs])
                        for k in ("top1", "knn20", "probe", *ATTRIBUTION)},
                     "agree": _mean_std([r.get("holdout_agree_t0", math.nan) for r in rs]),
                     "per_seed_top1": [round(r["top1"], 2) for r in rs]})
    verdicts = claim_verdicts(exp.claims, rows)
    return {"name": name, "paper": exp.paper, "what": exp.what, "seeds": seeds, "rows": rows,
            "verdicts": verdicts, "seconds": round(seconds, 1)}


def claim_verdicts(claims: list[tuple[str, str, str]], rows: list[dict]) -> list[str]:
    """One line per claim: **holds** when the margin is positive and ahead in most seeds,
    **does not hold** when it is not positive, and **within the noise** when it is positive
    but ahead in half the seeds or fewer."""
    out = []
    for claim, better, worse in claims:
        b, w = _row(rows, better), _row(rows, worse)
        if b is None or w is None:
            continue
        diffs = [x - y for x, y in zip(b["per_seed_top1"], w["per_seed_top1"], strict=True)]
        mean, std = _mean_std(diffs)
        wins = sum(d > 0 for d in diffs)
        ok = mean >= 0 if "holds or helps" in claim else mean > 0
        verdict = ("does not hold" if not ok else "holds" if wins > len(diffs) / 2
                   or "holds or helps" in claim else "within the noise")
        out.append(f"{claim}: **{verdict}** (margin {mean:+.1f} +- {std:.1f} over {len(diffs)} "
                   f"seeds, ahead in {wins})")
    return out


def _row(rows: list[dict], label: str) -> dict | None:
    """The row called `label`, else the first whose label starts with it."""
    exact = [r for r in rows if r["variant"] == label]
    return (exact or [r for r in rows if r["variant"].startswith(label)] or [None])[0]


COLUMNS = {"top1": "top-1", "knn20": "kNN-20", "probe": "linear probe", "agree": "agreement",
           "in_mask": "Grad-CAM mass on object, pretrained", "pointing": "Grad-CAM peak on "
           "object, pretrained", "in_mask_ft": "mass, fine-tuned", "pointing_ft": "peak, "
           "fine-tuned"}
ATTRIBUTION = ("in_mask", "pointing", "in_mask_ft", "pointing_ft")


def _cell(v: list[float]) -> str:
    return "" if math.isnan(v[0]) else f"{v[0]:.1f} +- {v[1]:.1f}"


def markdown(table: dict, command: str) -> str:
    nan = [math.nan, math.nan]
    columns = [k for k in COLUMNS if any(not math.isnan(r.get(k, nan)[0]) for r in table["rows"])]
    lines = [f"## `{table['name']}`: {table['what']} ({table['paper']})", "", "    " + command, "",
             f"{table['student']} student, the demo's recipe; seeds {table['seeds']}; wall time "
             f"{table['seconds'] / 60:.1f} min on this machine. Video top-1 on split 1 after "
             "fine-tuning; kNN-20 and linear probe on the frozen pretrained features; agreement "
             "with the teacher's top class on 256 held-out corpus clips. Mean +- std over seeds.",
             *table.get("notes", []),
             "", "| variant | " + " | ".join(COLUMNS[k] for k in columns) + " | paper |",
             "|---|" + "---|" * len(columns) + "---|"]
    for r in table["rows"]:
        lines.append(f"| {r['variant']} | " + " | ".join(_cell(r[k]) for k in columns)
                     + f" | {r['paper'] if r['paper'] is not None else ''} |")
    lines += ["", *[f"- {v}" for v in table["verdicts"]]]
    return "\n".join(lines) + "\n"


def write_section(doc: Path, name: str, text: str) -> None:
    """Replace (or append) this experiment's section of the Markdown page."""
    head = "# Reproducing the paper's ablations\n\nEach section is written by the command in it.\n"
    body = doc.read_text() if doc.is_file() else head
    marker = f"<!-- reproduce:{name} -->"
    parts = body.split(marker)
    section = f"{marker}\n{text}{marker}"
    body = parts[0] + section + parts[2] if len(parts) == 3 else body.rstrip() + "\n\n" + section
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(body.rstrip() + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="distinit reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(EXPERIMENTS))
    parser.add_argument("args", nargs="*", help="demo settings, e.g. out_dir=runs/reproduce")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--doc", default="docs/REPRODUCTION.md", help="Markdown page to update")
    parser.add_argument("--student", choices=sorted(STUDENTS), default="res3d",
                        help="the distilled student (default res3d; the paper's ablations use "
                             "r2plus1d, twice the cost)")
    parser.add_argument("--overwrite", action="store_true", help="train every run again")
    ns = parser.parse_intermixed_args(argv)
    demo = config_from_args(["out_dir=runs/reproduce", *ns.args], DemoConfig)
    seeds = [int(s) for s in ns.seeds.split(",") if s]
    table = run_experiment(ns.name, demo, seeds, ns.overwrite, ns.student)
    command = "distinit reproduce " + " ".join([ns.name, *ns.args, f"--seeds {ns.seeds}",
                                                f"--student {ns.student}"])
    text = markdown(table, command)
    print("\n" + text, flush=True)
    if ns.doc:
        write_section(Path(ns.doc), ns.name, text)
        print(f"wrote the {ns.name} section of {ns.doc}")
    return 0
