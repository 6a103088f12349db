"""`distinit demo`: the paper's Table 1 (distillation vs inflation vs scratch) on the synthetic world.

Every stage runs one of the CLI's own jobs on a recipe from `configs/demo/` (YAML, the same files
a user runs with `distinit train-image | distill | finetune FILE.yaml`); the demo only fills in
the world's paths, the seed and the run folders:

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

import argparse
import csv
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from distinit.build import (
    clip_dataset,
    holdout_split,
    init_student,
    input_channels,
    labeled_split,
    make_student,
    resolve_normalization,
)
from distinit.checkpoint import seed_all
from distinit.config import Config, config_from_args, load_config
from distinit.data.synth import World, generate_world
from distinit.errors import UserError
from distinit.image_train import CHECKPOINT, train_image_model
from distinit.models.teachers import build_teacher
from distinit.probe import frozen_scores
from distinit.run import distill, finetune
from distinit.runtime import Runtime

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "demo"
FROZEN_FEATURES = "frozen_features.pt"  # in each finetune_<row> folder

ROWS = {  # name -> (student, initialisation)
    "res3d_scratch": ("Res3D", "Scratch"),
    "res3d_inflated": ("Res3D", "ImageNet-analog inflated (ResNet-18 analog)"),
    "res3d_places_inflated": ("Res3D", "PlaceNet-analog inflated"),
    "res3d_distinit": ("Res3D", "DistInit (ours)"),
    "r2plus1d_scratch": ("R(2+1)D", "Scratch"),
    "r2plus1d_distinit": ("R(2+1)D", "DistInit (ours)"),
    "r2plus1d_supervised": ("R(2+1)D", "Supervised pretraining on the corpus"),
}
ARCH = {"Res3D": "r3d_18", "R(2+1)D": "r2plus1d_18"}
PAPER = {"res3d_scratch": 25.4, "res3d_inflated": 35.8, "res3d_places_inflated": 35.6,
         "res3d_distinit": 39.9, "r2plus1d_scratch": 24.1, "r2plus1d_distinit": 40.3,
         "r2plus1d_supervised": 51.0}  # Table 1, top-1 on HMDB-51 split 1
# The paper's orderings: (claim, better row, worse row).
CLAIMS = [
    ("DistInit beats scratch (Res3D)", "res3d_distinit", "res3d_scratch"),
    ("DistInit beats scratch (R(2+1)D)", "r2plus1d_distinit", "r2plus1d_scratch"),
    ("DistInit beats ImageNet inflation (Res3D)", "res3d_distinit", "res3d_inflated"),
    ("ImageNet inflation beats scratch (Res3D)", "res3d_inflated", "res3d_scratch"),
    ("ImageNet inflation at least matches PlaceNet inflation", "res3d_inflated",
     "res3d_places_inflated"),
    ("Supervised pretraining on the corpus beats DistInit (R(2+1)D)", "r2plus1d_supervised",
     "r2plus1d_distinit"),
]
STAGES = ("teacher", "inflation_source", "scene_net", "distill", "supervised", "finetune", "modist",
          "auxskd", "vspp", "pace", "vcop")


@dataclass
class DemoConfig:
    out_dir: str = "runs/demo"
    seed: int = 0  # training seed (every network, data order)
    seeds: list[int] = field(default_factory=list)  # several seeds: OUT_DIR/seedN + mean and std
    world_seed: int = 0
    size: str = "small"
    world_dir: str = ""  # default: OUT_DIR/../world-<size>-<world_seed>, shared between seeds
    rows: list[str] = field(default_factory=lambda: list(ROWS))
    threads: int = 0
    precision: str = "auto"
    channels_last: str = "auto"
    recipes: str = ""  # folder of the stage recipes (STAGES.yaml); empty = configs/demo
    figures: bool = True  # write the paper's figures (distinit figures) next to the table
    # key=value overrides for every stage, then for one stage, e.g. 'distill=[optim.epochs=2]'.
    all: list[str] = field(default_factory=list)
    teacher: list[str] = field(default_factory=list)
    inflation_source: list[str] = field(default_factory=list)
    scene_net: list[str] = field(default_factory=list)
    distill: list[str] = field(default_factory=list)
    supervised: list[str] = field(default_factory=list)
    finetune: list[str] = field(default_factory=list)
    # `distinit reproduce` only: the other methods' stages
    modist: list[str] = field(default_factory=list)
    auxskd: list[str] = field(default_factory=list)
    vspp: list[str] = field(default_factory=list)
    pace: list[str] = field(default_factory=list)
    vcop: list[str] = field(default_factory=list)


def stage_config(demo: DemoConfig, stage: str, out_dir: Path, paths: list[str],
                 extra: list[str] = (), cls: type = Config) -> Config:
    """A stage's run config (a `cls`: a method's own config class for its pretraining stage):
    its recipe, then the world's paths, then the user's overrides."""
    recipe = Path(demo.recipes) if demo.recipes else RECIPES
    path = recipe / f"{stage}.yaml"
    if not path.is_file():
        raise UserError(f"the demo's recipe {path} is missing; point recipes= at a folder with "
                        f"{', '.join(s + '.yaml' for s in STAGES)}")
    runtime = [f"seed={demo.seed}", f"precision={demo.precision}", f"threads={demo.threads}",
               f"channels_last={demo.channels_last}", f"out_dir={out_dir}"]
    return load_config(path, [*runtime, *paths, *demo.all, *getattr(demo, stage), *extra],
                       cls=cls)


def _restart(cfg: Config, overwrite: bool) -> dict:
    """Each stage continues its own run when one is there (a finished stage is only reloaded),
    so an interrupted demo picks up where it stopped; --overwrite trains every stage again."""
    resume = not overwrite and (Path(cfg.out_dir) / "last.pt").is_file()
    return {"resume": resume, "overwrite": overwrite}


def _cache(world: World) -> str:
    return f"data.cache_dir={world.root / 'cache'}"


def train_2d(demo: DemoConfig, world: World, out: Path, stage: str, overwrite: bool = False,
             scenes: bool = False) -> tuple[Path, dict]:
    """A 2D network on the object (or scene) stills: (its teacher.pt, its results)."""
    images = (world.scenes_train, world.scenes_test) if scenes else (world.objects_train,
                                                                      world.objects_test)
    cfg = stage_config(demo, stage, out / stage,
                       [f"data.images={images[0]}", f"data.images_test={images[1]}"])
    result = train_image_model(cfg, **_restart(cfg, overwrite))
    return Path(cfg.out_dir) / CHECKPOINT, result


def teacher_on_frames(teacher_path: Path, world: World, cfg: Config, every: int = 3) -> float:
    """Top-1 (%) of an object network on the middle frame of labeled action videos (every
    `every`-th), against the object each video shows: how much of what it knows survives the
    shift from framed stills to video frames (motion blur, scale, clutter, compression)."""
    with (world.root / "actions" / "meta.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[::every]
    teacher = build_teacher(f"ckpt:{teacher_path}")
    classes = list(teacher.classes or world.object_classes)
    videos = [world.actions_videos / r["path"] for r in rows]
    labels = [classes.index(r["object"]) for r in rows]
    data = replace(cfg.data, clip_len=1, num_test_clips=1)
    dataset = clip_dataset(data, videos, labels, train_mode=False, seed=0)
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    correct = 0
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=128):
            pixels = (batch["video"][:, :, 0] * std + mean).clamp(0, 1)  # the teacher normalises
            correct += (teacher(pixels).argmax(-1) == batch["label"]).sum().item()
    return 100.0 * correct / len(videos)


def corpus_split(world: World, out: Path, holdout: int) -> Path:
    """The corpus's hidden labels as train.csv / test.csv (the held-out videos of distillation):
    supervised pretraining is a fine-tune on them, judged on videos it never trained on."""
    train, test = holdout_split(list(zip(world.corpus_videos, world.corpus_labels, strict=True)),
                                holdout)
    folder = out / "corpus_split"
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test or train)):
        lines = [f"{p},{world.corpus_classes[y]}" for p, y in rows]
        (folder / f"{name}.csv").write_text("path,label\n" + "\n".join(lines) + "\n")
    return folder


def pretrain(demo: DemoConfig, world: World, out: Path, row: str, teacher: Path,
             sources: dict[str, Path], overwrite: bool) -> tuple[str, str, dict]:
    """(model.init, model.weights, stage results) of one row's initialisation."""
    arch = ARCH[ROWS[row][0]]
    if row.endswith("_distinit"):
        cfg = stage_config(demo, "distill", out / f"{arch}_distill",
                           [f"data.videos={world.corpus_dir}", _cache(world),
                            f"distill.teachers=[{{spec: 'ckpt:{teacher}'}}]",
                            f"model.arch={arch}"])
        result = distill(cfg, **_restart(cfg, overwrite))
        return "checkpoint", str(Path(cfg.out_dir) / "last.pt"), result
    if row.endswith("_supervised"):
        # Held out: the videos distillation holds out, so both are judged on the same ones.
        holdout = stage_config(demo, "distill", out / "unused", []).distill.holdout
        split = corpus_split(world, out, holdout)
        cfg = stage_config(demo, "supervised", out / f"{arch}_supervised",
                           ["data.format=csv", f"data.split_dir={split}", "data.video_root=",
                            _cache(world), f"model.arch={arch}"])
        result = finetune(cfg, **_restart(cfg, overwrite))
        return "checkpoint", str(Path(cfg.out_dir) / "last.pt"), result
    if row.endswith("_places_inflated"):
        return "inflate", str(sources["scene_net"]), {}
    if row.endswith("_inflated"):
        return "inflate", str(sources["inflation_source"]), {}
    return "scratch", "", {}


def finetune_row(demo: DemoConfig, world: World, out: Path, row: str, init: str, weights: str,
                 overwrite: bool) -> dict:
    """Frozen-feature scores (kNN, linear probe) of the initialisation, then the fine-tune."""
    arch = ARCH[ROWS[row][0]]
    cfg = stage_config(demo, "finetune", out / f"finetune_{row}",
                       ["data.format=hmdb51", f"data.video_root={world.actions_videos}",
                        f"data.split_dir={world.actions_splits}", "data.split=1", _cache(world),
                        f"model.arch={arch}", f"model.init={init}", f"model.weights={weights}"])
    frozen = frozen_eval(cfg)
    result = finetune(cfg, **_restart(cfg, overwrite))
    # The initialisation's features of the test videos, for `distinit figures` (t-SNE).
    classes = json.loads((Path(cfg.out_dir) / "results.json").read_text()).get("classes", [])
    torch.save({**frozen.pop("features"), "classes": classes}, Path(cfg.out_dir) / FROZEN_FEATURES)
    return {**result, **frozen}


def frozen_eval(cfg: Config) -> dict:
    """kNN (k = 1, 20) and linear-probe video top-1 of the initial weights, on split 1."""
    cfg = resolve_normalization(cfg, cfg.model.weights if cfg.model.init == "checkpoint" else "")
    seed_all(cfg.seed)
    train_split, test_split = labeled_split(cfg.data, "train"), labeled_split(cfg.data, "test")
    student = make_student(cfg.model, num_classes=0, in_channels=input_channels(cfg.data))
    init_student(student, cfg.model)
    rt = Runtime.of(cfg)
    rt.place(student)
    sets = [clip_dataset(cfg.data, s.videos, s.labels, False, cfg.seed)
            for s in (train_split, test_split)]
    return frozen_scores(student, sets[0], len(train_split.videos), sets[1],
                         len(test_split.videos), len(train_split.classes), runtime=rt,
                         keep_features=True)


def run_demo(demo: DemoConfig, overwrite: bool = False) -> dict:
    unknown = sorted(set(demo.rows) - set(ROWS))
    if unknown:
        raise UserError(f"unknown demo row {unknown[0]}; valid rows: {', '.join(ROWS)}")
    if demo.threads > 0:
        torch.set_num_threads(demo.threads)
    out = Path(demo.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    world_dir = Path(demo.world_dir or out.parent / f"world-{demo.size}-{demo.world_seed}")
    world = generate_world(world_dir, seed=demo.world_seed, size=demo.size)
    times["world"] = time.perf_counter() - t
    print(world.summary(), flush=True)

    stats: dict = {}
    sources: dict[str, Path] = {}
    t = time.perf_counter()
    teacher, result = train_2d(demo, world, out, "teacher", overwrite)
    times["teacher"] = time.perf_counter() - t
    stats["teacher_stills"] = result.get("test_top1", float("nan"))
    cfg = stage_config(demo, "teacher", out / "teacher", [])
    stats["teacher_frames"] = teacher_on_frames(teacher, world, cfg)
    print(f"teacher (ResNet-50 analog): {stats['teacher_stills']:.1f}% on object stills of unseen "
          f"instances, {stats['teacher_frames']:.1f}% on frames of labeled videos "
          f"({times['teacher']:.0f} s)", flush=True)
    wanted = {"inflation_source": any(r.endswith("_inflated") and "places" not in r
                                      for r in demo.rows),
              "scene_net": "res3d_places_inflated" in demo.rows}
    for stage, needed in wanted.items():
        if not needed:
            continue
        t = time.perf_counter()
        sources[stage], result = train_2d(demo, world, out, stage, overwrite,
                                          scenes=stage == "scene_net")
        times[stage] = time.perf_counter() - t
        stats[f"{stage}_test"] = result.get("test_top1", float("nan"))
        print(f"{stage}: {stats[f'{stage}_test']:.1f}% on unseen "
              f"{'scene' if stage == 'scene_net' else 'object'} stills ({times[stage]:.0f} s)",
              flush=True)

    inits: dict[str, tuple[str, str]] = {}
    for row in demo.rows:
        t = time.perf_counter()
        init, weights, result = pretrain(demo, world, out, row, teacher, sources, overwrite)
        inits[row] = (init, weights)
        times[f"pretrain {row}"] = time.perf_counter() - t
        if "holdout_agree_t0" in result:
            stats[f"{row}_agree"] = result["holdout_agree_t0"]
            stats[f"{row}_soft_loss"] = result["holdout_loss_t0"]
            print(f"{row}: agrees with the teacher's top class on {result['holdout_agree_t0']:.1f}% "
                  f"of {result['holdout_videos']} held-out corpus clips (soft-target loss "
                  f"{result['holdout_loss_t0']:.3f})", flush=True)
        if row.endswith("_supervised"):
            stats[f"{row}_corpus_test"] = result["top1"]
            print(f"{row}: {result['top1']:.1f}% top-1 on held-out corpus videos (final "
                  f"training loss {result.get('train_loss') or float('nan'):.3f})", flush=True)

    rows = []
    for row in demo.rows:
        t = time.perf_counter()
        result = finetune_row(demo, world, out, row, *inits[row], overwrite)
        times[f"finetune {row}"] = time.perf_counter() - t
        rows.append({"row": row, "model": ROWS[row][0], "init": ROWS[row][1],
                     **{k: round(result[k], 2) for k in ("clip_acc", "top1", "top5", "knn1",
                                                          "knn20", "probe")}})
        r = rows[-1]
        print(f"{r['model']:8s} {r['init']:44s} clip {r['clip_acc']:5.1f}  top1 {r['top1']:5.1f}  "
              f"top5 {r['top5']:5.1f}  kNN-20 {r['knn20']:5.1f}  probe {r['probe']:5.1f}",
              flush=True)

    table = {"seed": demo.seed, "world_seed": demo.world_seed, "size": demo.size,
             "stats": {k: round(v, 2) for k, v in stats.items()}, "rows": rows,
             "seconds": {k: round(v, 1) for k, v in times.items()},
             "chance": round(100.0 / len(world.action_classes), 2)}
    (out / "table1.json").write_text(json.dumps(table, indent=2))
    (out / "table1.md").write_text(markdown_table(table, [table]))
    print("\n" + markdown_table(table, [table]), flush=True)
    if demo.figures:
        figures([out])
    return table


def figures(run_dirs: list[Path]) -> None:
    """The paper's figures from these runs, in the first one's figures/ folder."""
    from distinit.figures import make_figures
    from distinit.optional import MissingDependency

    try:
        made = make_figures(run_dirs, run_dirs[0].parent / "figures" if len(run_dirs) > 1
                            else run_dirs[0] / "figures")
    except MissingDependency as e:  # the table stands without its figures
        print(f"figures skipped: {e}", flush=True)
        return
    if made:
        print(f"figures: {', '.join(str(p) for p in made.values())}", flush=True)


COLUMNS = ("clip_acc", "top1", "top5", "knn1", "knn20", "probe")
HEADER = ("| Model | Initialization | Per clip | Top 1 | Top 5 | kNN-1 | kNN-20 | Linear probe "
          "| Paper top 1 |\n|---|---|---|---|---|---|---|---|---|")


def markdown_table(summary: dict, tables: list[dict]) -> str:
    """The table (mean +- std when several seeds) and each claim's verdict."""
    several = len(tables) > 1

    def cell(v, digits: int = 1) -> str:
        return f"{v[0]:.{digits}f} +- {v[1]:.{digits}f}" if several else f"{v:.{digits}f}"

    s = summary["stats"]
    head = (f"Table 1 analog on the synthetic world ({summary['size']}, world seed "
            f"{summary['world_seed']}, {'seeds ' + str(summary['seeds']) if several else 'seed ' + str(summary['seed'])}); "
            f"chance {tables[0]['chance']}%.")
    facts = [f"Teacher (ResNet-50 analog): {cell(s['teacher_stills'])}% on object stills of unseen "
             f"instances, {cell(s['teacher_frames'])}% on frames of labeled videos."]
    for key, text in (("inflation_source_test", "ResNet-18 analog (inflation source): {}% on "
                       "unseen object stills."), ("scene_net_test", "Scene network (PlaceNet "
                       "analog): {}% on unseen scene stills.")):
        if key in s:
            facts.append(text.format(cell(s[key])))
    for row in ROWS:
        if f"{row}_agree" in s:
            facts.append(f"{ROWS[row][0]} DistInit student: agrees with the teacher's top class on "
                         f"{cell(s[f'{row}_agree'])}% of held-out corpus clips (soft-target loss "
                         f"{cell(s[f'{row}_soft_loss'], 3)}).")
        if f"{row}_corpus_test" in s:
            facts.append(f"{ROWS[row][0]} supervised pretraining: {cell(s[f'{row}_corpus_test'])}% "
                         f"top-1 on held-out corpus videos.")
    lines = [head, "", *[f"- {f}" for f in facts], "", HEADER]
    for r in summary["rows"]:
        lines.append(f"| {r['model']} | {r['init']} | " + " | ".join(cell(r[k]) for k in COLUMNS)
                     + f" | {PAPER[r['row']]} |")
    lines += ["", "Which of the paper's orderings hold here (video top-1 after fine-tuning):"]
    lines += [f"- {v}" for v in verdicts(tables)]
    if not several:
        total = sum(summary["seconds"].values())
        lines += ["", f"Wall time {total:.0f} s: " + ", ".join(
            f"{k} {v:.0f} s" for k, v in summary["seconds"].items())]
    return "\n".join(lines) + "\n"


def verdicts(tables: list[dict]) -> list[str]:
    """One line per claim whose rows ran: holds / does not hold, the margin and its spread."""
    out = []
    for claim, better, worse in CLAIMS:
        margins = []
        for t in tables:
            top1 = {r["row"]: r["top1"] for r in t["rows"]}
            if better in top1 and worse in top1:
                margins.append(top1[better] - top1[worse])
        if not margins:
            continue
        m = torch.tensor(margins, dtype=torch.float64)
        mean, std = m.mean().item(), (m.std().item() if len(m) > 1 else 0.0)
        wins = int((m > 0).sum())
        verdict = "holds" if mean > 0 else "does not hold"
        paper = PAPER[better] - PAPER[worse]
        spread = f" +- {std:.1f}, ahead in {wins} of {len(m)} seeds" if len(m) > 1 else ""
        out.append(f"{claim}: **{verdict}** (margin {mean:+.1f}{spread}; paper {paper:+.1f})")
    return out


def run_seeds(demo: DemoConfig, overwrite: bool = False) -> dict:
    """The demo once per seed (same world), then the mean and std of every number."""
    out = Path(demo.out_dir)
    world_dir = demo.world_dir or str(out / f"world-{demo.size}-{demo.world_seed}")
    tables = [run_demo(replace(demo, seed=s, seeds=[], out_dir=str(out / f"seed{s}"),
                               world_dir=world_dir, figures=False), overwrite)
              for s in demo.seeds]
    summary = {"seeds": demo.seeds, "size": demo.size, "world_seed": demo.world_seed,
               "stats": {k: _mean_std([t["stats"][k] for t in tables])
                         for k in tables[0]["stats"]}, "rows": []}
    for i, row in enumerate(tables[0]["rows"]):
        summary["rows"].append({**{k: row[k] for k in ("row", "model", "init")}, **{
            k: _mean_std([t["rows"][i][k] for t in tables]) for k in COLUMNS}})
    summary["seconds_per_seed"] = [round(sum(t["seconds"].values()), 1) for t in tables]
    summary["verdicts"] = verdicts(tables)
    text = markdown_table(summary, tables)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(text)
    print("\n" + text, flush=True)
    if demo.figures:
        figures([out / f"seed{s}" for s in demo.seeds])
    return summary


def _mean_std(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    std = t.std().item() if len(values) > 1 else 0.0  # sample std (n - 1)
    return [round(t.mean().item(), 2), round(std, 2)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="distinit demo", description=__doc__.splitlines()[0])
    parser.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...], e.g. seed=1")
    parser.add_argument("--overwrite", action="store_true",
                        help="train every stage again instead of continuing the runs in out_dir")
    ns = parser.parse_intermixed_args(argv)
    demo = config_from_args(ns.args, DemoConfig)
    run_seeds(demo, ns.overwrite) if demo.seeds else run_demo(demo, ns.overwrite)
    return 0
