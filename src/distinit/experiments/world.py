"""Stages on the synthetic world, as `distinit demo` and `distinit reproduce` build them: the
demo's recipes (`configs/demo/NAME.yaml`) with the world's paths, the run's seed and runtime, and
the user's overrides (for every stage, then per recipe: `distill=[optim.epochs=2]`)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from distinit.build import clip_dataset, holdout_split
from distinit.config import MAX_SEED, SEED_WHY, Config, checked, config_from_args, to_dict
from distinit.data.synth import World, generate_world
from distinit.errors import UserError
from distinit.experiments.runner import Stage, stage_config
from distinit.methods import METHODS, get_method
from distinit.models.teachers import build_teacher
from distinit.targets.frames import unnormalize

RECIPES = Path(__file__).resolve().parents[3] / "configs" / "demo"


def recipe_of(method: str) -> str:
    """A pretraining method's recipe, `configs/demo/NAME.yaml`: its module's `DEMO_RECIPE`
    (DistInit's is distill.yaml), else its name."""
    return getattr(get_method(method), "DEMO_RECIPE", method) if method in METHODS else method


ARCH = {"Res3D": "r3d_18", "R(2+1)D": "r2plus1d_18"}


@dataclass
class DemoConfig:
    out_dir: str = "runs/demo"
    seed: int = checked(0, min=0, max=MAX_SEED, why=SEED_WHY)  # every network, data order
    # Several seeds: OUT_DIR/seedN + mean and std.
    seeds: list[int] = checked([], min=0, max=MAX_SEED, why=SEED_WHY, distinct=True)
    world_seed: int = checked(0, min=0, max=MAX_SEED, why=SEED_WHY)
    size: str = "small"
    world_dir: str = ""  # default: OUT_DIR/../world-<size>-<world_seed>, shared between seeds
    rows: list[str] = field(default_factory=list)  # the demo's Table 1 rows (default: all)
    threads: int = checked(0, min=0, max=1024)  # each stage's (0: torch's default; 1 if jobs > 1)
    jobs: int = checked(0, min=0, max=256)  # stages side by side, each a one-thread process (0: one per core; 1: in turn)
    precision: str = "auto"
    channels_last: str = "auto"
    recipes: str = ""  # folder of the stage recipes (NAME.yaml); empty = configs/demo
    figures: bool = True  # write the paper's figures (distinit figures) next to the table
    all: list[str] = field(default_factory=list)  # key=value overrides for every stage
    # ... then for the stages of one recipe: `NAME=[key=value, ...]` on the command line.
    overrides: dict[str, list[str]] = field(default_factory=dict)

    def world(self) -> World:
        out = Path(self.out_dir)
        folder = Path(self.world_dir or out.parent / f"world-{self.size}-{self.world_seed}")
        return generate_world(folder, seed=self.world_seed, size=self.size)


def recipe_names(demo: DemoConfig) -> list[str]:
    return sorted(p.stem for p in recipe_dir(demo).glob("*.yaml"))


def recipe_dir(demo: DemoConfig) -> Path:
    return Path(demo.recipes) if demo.recipes else RECIPES


def parse_demo(args: list[str]) -> DemoConfig:
    """`key=value` settings; `NAME=[...]` for a recipe NAME is `overrides.NAME=[...]`: it
    overrides that recipe's stages."""
    base = config_from_args([a for a in args if a.startswith("recipes=")], DemoConfig)
    names, recipes = {f.name for f in fields(DemoConfig)}, recipe_names(base)
    return config_from_args([f"overrides.{a}" if "=" in a and a.split("=", 1)[0] not in names
                             and a.split("=", 1)[0] in recipes else a for a in args], DemoConfig)


def recipe_path(demo: DemoConfig, name: str) -> Path:
    path = recipe_dir(demo) / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"the demo's recipe {path} is missing; point recipes= at a folder with "
                        f"{', '.join(n + '.yaml' for n in recipe_names(demo)) or 'NAME.yaml files'}")
    return path


def world_stage(demo: DemoConfig, name: str, kind: str, recipe: str, out: Path,
                before: list[str] = (), after: list[str] = (), **kw) -> Stage:
    """A stage on recipe `recipe`: runtime, `before` (the world's paths), the user's overrides
    for every stage and for this recipe, then `after`."""
    unknown = sorted(set(demo.overrides) - set(recipe_names(demo)))
    if unknown:
        raise UserError(f"no demo recipe is called {unknown[0]}; overrides name one of "
                        f"{', '.join(recipe_names(demo))}")
    runtime = [f"seed={demo.seed}", f"precision={demo.precision}", f"threads={demo.threads}",
               f"channels_last={demo.channels_last}"]
    overrides = [*runtime, *before, *demo.all, *demo.overrides.get(recipe, []), *after]
    return Stage(name, kind, recipe_path(demo, recipe), tuple(overrides), out=out, **kw)


def stage_tree(demo: DemoConfig, recipe: str, kind: str) -> dict:
    """The config a recipe resolves to with the demo's overrides (paths and folder aside): what
    run folders are keyed by."""
    tree = to_dict(stage_config(world_stage(demo, "key", kind, recipe, Path("."))))
    tree.pop("out_dir")
    return tree


def cache(world: World) -> str:
    return f"data.cache_dir={world.root / 'cache'}"


def image_stage(demo: DemoConfig, world: World, out: Path, name: str) -> Stage:
    """A 2D network on the object stills (ImageNet's role) or, for `scene_net`, the scene
    stills (Places')."""
    images = ((world.scenes_train, world.scenes_test) if name == "scene_net"
              else (world.objects_train, world.objects_test))
    return world_stage(demo, name, "train-image", name, out / name,
                       [f"data.images={images[0]}", f"data.images_test={images[1]}"])


def pretrain_stage(demo: DemoConfig, world: World, method: str, arch: str, out: Path,
                   teacher: Path | None, after: list[str] = ()) -> Stage:
    """A registered method on the world's unlabeled corpus (DistInit taught by `teacher`)."""
    recipe = recipe_of(method)
    paths = [f"data.videos={world.corpus_dir}", cache(world)]
    if method == "distinit":
        paths.append(f"distill.teachers=[{{spec: 'ckpt:{teacher}'}}]")
    return world_stage(demo, f"{arch}_{recipe}", method, recipe, out / f"{arch}_{recipe}",
                       [*paths, f"model.arch={arch}"], after)


def finetune_stage(demo: DemoConfig, world: World, arch: str, out: Path, name: str,
                   start: str) -> Stage:
    """Frozen-feature scores (kNN, linear probe) of `start`'s weights, then the fine-tune on
    split 1 of the action set (HMDB-51's role)."""
    # The cache folder goes before the overrides, as in `pretrain_stage`: a variant may keep
    # its clip stores elsewhere (reproduce store: one folder per codec).
    return world_stage(demo, name, "finetune", "finetune", out / name, before=[cache(world)],
                       after=["data.format=hmdb51", f"data.video_root={world.actions_videos}",
                              f"data.split_dir={world.actions_splits}", "data.split=1",
                              f"model.arch={arch}"], start=start, probe=True)


def teacher_on_frames(teacher_path: Path, world: World, cfg: Config, every: int = 3) -> float:
    """Top-1 (%) of an object network on the middle frame of labeled action videos (every
    `every`-th), against the object each video shows: how much of what it knows survives the
    shift from framed stills to video frames (motion blur, scale, clutter, compression)."""
    from dataclasses import replace

    with (world.root / "actions" / "meta.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[::every]
    teacher = build_teacher(f"ckpt:{teacher_path}")
    classes = list(teacher.classes or world.object_classes)
    videos = [world.actions_videos / r["path"] for r in rows]
    labels = [classes.index(r["object"]) for r in rows]
    data = replace(cfg.data, clip_len=1, num_test_clips=1)
    dataset = clip_dataset(data, videos, labels, train_mode=False, seed=0)
    correct = 0
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=128):
            pixels = unnormalize(batch["video"][:, :, 0], data.mean, data.std)  # (B, C, H, W)
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
