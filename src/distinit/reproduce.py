"""`distinit reproduce NAME`: one of the paper's ablations on the synthetic world, over seeds.

Every experiment distills the demo's teacher into a student (Res3D by default: R(2+1)D, the
paper's ablation model, costs twice as much per clip and would not fit 3 seeds in 15 minutes
on 2 cores; `--student r2plus1d`) with the demo's recipe (`configs/demo/`), changing only what
the experiment is about,
then fine-tunes each student on split 1 with the demo's schedule. The world, the teachers
(trained once, seed 0) and the decoded-video cache are shared by every variant and seed. It
prints a table with mean +- std over seeds, says which of the paper's claims hold, and writes
its section of docs/REPRODUCTION.md (or --doc) with the command and the wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from distinit.config import config_from_args, to_dict
from distinit.data.synth import World, generate_world
from distinit.data.synth.world import with_overrides
from distinit.demo import ROWS, DemoConfig, finetune_row, pretrain, stage_config, train_2d
from distinit.errors import UserError

STUDENTS = {"res3d": "res3d_distinit", "r2plus1d": "r2plus1d_distinit"}


@dataclass
class Variant:
    label: str
    overrides: list[str]  # distill-stage overrides
    paper: float | None = None  # the paper's top-1 for this setting, where it has one


@dataclass
class Context:
    """What variants may depend on: the world, the shared teachers, earlier results."""

    world: World
    out: Path
    teacher: Path
    scene_net: Path
    results: dict[str, list[dict]]  # label -> one result per seed, filled as variants finish


@dataclass
class Experiment:
    paper: str
    what: str
    variants: Callable[[Context], list[Variant]]
    claims: list[tuple[str, str, str]]  # (claim, better label, worse label)


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
    files = {}
    for name, items in lists.items():
        files[name] = ctx.out / f"corpus_{name.rstrip('%')}.txt"
        files[name].write_text("\n".join(items) + "\n")
    size = f"optim.epoch_size={len(videos)}"  # every variant trains on as many clips
    return [Variant("first corpus, 25%", [f"data.videos={files['25%']}", size]),
            Variant("first corpus, 50%", [f"data.videos={files['50%']}", size]),
            Variant("first corpus, 100%", [f"data.videos={files['100%']}", size], 40.3),
            Variant("second corpus (more background, no scene bias)",
                    [f"data.videos={files['second']}", size], 39.9),
            Variant("union of both", [f"data.videos={files['union']}", size], 41.8)]


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
                             "objects (ImageNet analog)", "scenes (Places analog)")]),
    "temperature": Experiment("beyond the paper", "softmax temperature of the targets",
                              _temperature, []),
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
    scene_net, _ = train_2d(shared, world, out / "shared", "scene_net", overwrite, scenes=True)
    ctx = Context(world, out / name, teacher, scene_net, {})
    ctx.out.mkdir(parents=True, exist_ok=True)
    done: list[str] = []
    while True:  # variants may depend on earlier results (entropy thresholds)
        todo = [v for v in exp.variants(ctx) if v.label not in done]
        if not todo:
            break
        v = todo[0]
        ctx.results[v.label] = []
        for seed in seeds:
            run = replace(demo, seed=seed, distill=[*demo.distill, *v.overrides])
            # Runs are kept by what they train, so experiments share identical ones (the recipe
            # itself is a variant of several) and a second command reloads them.
            run_out = out / "runs" / _recipe_key(run) / f"seed{seed}"
            run = replace(run, out_dir=str(run_out))
            row = STUDENTS[student]
            _, weights, pre = pretrain(run, world, run_out, row, teacher, {}, overwrite)
            result = finetune_row(run, world, run_out, row, "checkpoint", weights, overwrite)
            ctx.results[v.label].append({**pre, **result})
            print(f"[{name}] {v.label}, seed {seed}: top-1 {result['top1']:.1f}, agreement "
                  f"{pre.get('holdout_agree_t0', math.nan):.1f}%", flush=True)
        done.append(v.label)
    variants = {v.label: v for v in exp.variants(ctx)}
    table = summarize(name, exp, variants, ctx.results, seeds, time.perf_counter() - start)
    table["student"] = ROWS[STUDENTS[student]][0]
    (ctx.out / "summary.json").write_text(json.dumps(table, indent=2))
    return table


def _recipe_key(demo: DemoConfig) -> str:
    """A short hash of the distill and fine-tune configs a run resolves to (paths aside)."""
    trees = [to_dict(stage_config(demo, stage, Path("."), [])) for stage in ("distill", "finetune")]
    for tree in trees:
        tree.pop("out_dir")
    return hashlib.sha1(json.dumps(trees, sort_keys=True).encode()).hexdigest()[:10]


def _mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(values) > 1 else 0.0)


def summarize(name: str, exp: Experiment, variants: dict[str, Variant],
              results: dict[str, list[dict]], seeds: list[int], seconds: float) -> dict:
    rows = []
    for label, rs in results.items():
        rows.append({"variant": label, "paper": variants[label].paper if label in variants else None,
                     **{k: _mean_std([r[k] for r in rs]) for k in ("top1", "knn20", "probe")},
                     "agree": _mean_std([r.get("holdout_agree_t0", math.nan) for r in rs]),
                     "per_seed_top1": [round(r["top1"], 2) for r in rs]})
    verdicts = []
    for claim, better, worse in exp.claims:
        b = next((r for r in rows if r["variant"].startswith(better)), None)
        w = next((r for r in rows if r["variant"].startswith(worse)), None)
        if b is None or w is None:
            continue
        diffs = [x - y for x, y in zip(b["per_seed_top1"], w["per_seed_top1"], strict=True)]
        mean, std = _mean_std(diffs)
        ok = mean >= 0 if "holds or helps" in claim else mean > 0
        verdicts.append(f"{claim}: **{'holds' if ok else 'does not hold'}** (margin {mean:+.1f} "
                        f"+- {std:.1f} over {len(diffs)} seeds, ahead in "
                        f"{sum(d > 0 for d in diffs)})")
    return {"name": name, "paper": exp.paper, "what": exp.what, "seeds": seeds, "rows": rows,
            "verdicts": verdicts, "seconds": round(seconds, 1)}


def markdown(table: dict, command: str) -> str:
    lines = [f"## `{table['name']}`: {table['what']} ({table['paper']})", "", "    " + command, "",
             f"{table['student']} student, the demo's recipe; seeds {table['seeds']}; wall time "
             f"{table['seconds'] / 60:.1f} min on this machine. Video top-1 on split 1 after "
             "fine-tuning; kNN-20 and linear probe on the frozen distilled features; agreement "
             "with the teacher's top class on 256 held-out corpus clips. Mean +- std over seeds.",
             "", "| variant | top-1 | kNN-20 | linear probe | agreement | paper |",
             "|---|---|---|---|---|---|"]
    for r in table["rows"]:
        cells = [f"{r[k][0]:.1f} +- {r[k][1]:.1f}" for k in ("top1", "knn20", "probe", "agree")]
        lines.append(f"| {r['variant']} | " + " | ".join(cells)
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
