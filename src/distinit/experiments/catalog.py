"""The experiments of `distinit reproduce`, as data: each is a list of variants (a pretraining
method and its overrides, or scratch or inflated weights; the stages before it), the claims its
rows test, and an optional hook that adds rows from the finished runs. Adding an experiment, or a
row to one, is an edit of this file only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distinit.config import load_config
from distinit.data.synth import World, generate_world
from distinit.data.synth.flow import world_flow
from distinit.data.synth.world import with_overrides
from distinit.experiments import hooks
from distinit.experiments.world import DemoConfig, recipe_path

# --student: (the student's name, its fine-tune folder's row name: finetune_ROW, a run-folder key)
STUDENTS = {"res3d": ("Res3D", "res3d_distinit"), "r2plus1d": ("R(2+1)D", "r2plus1d_distinit")}


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
    """tau^2 rescaling on (`distill.tau_squared`, Hinton et al.): tau changes the targets'
    softness, not also the step size."""
    return [Variant(f"tau = {t}", [f"distill.temperature={t}"]) for t in (1, 2, 4)]


def _schedule(ctx: Context) -> list[Variant]:
    """The distillation recipe's length: the demo's 5 epochs against 10 and 20 (the cosine
    schedule spans each run), to see where the held-out agreement stops rising."""
    return [Variant(f"{n} epochs", [f"optim.epochs={n}"]) for n in (5, 10, 20)]


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


TASKS = {"vspp": "VSPP", "vcop": "VCOP", "pace": "pace prediction", "rspnet": "RSPNet"}


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


def _store(ctx: Context) -> list[Variant]:
    """DistInit with every clip read from a clip store (data.cache=store): raw uint8 frames
    against JPEG frames (data.store_codec=jpeg) at the default quality 90 and at 75, in both the
    distillation and the fine-tune. Each codec keeps its stores in a folder of its own."""
    def store(name: str, codec: list[str]) -> list[str]:
        return ["data.cache=store", f"data.cache_dir={ctx.out / 'stores' / name}", *codec]

    raw, q90 = store("raw", []), store("jpeg90", ["data.store_codec=jpeg"])
    q75 = store("jpeg75", ["data.store_codec=jpeg", "data.store_quality=75"])
    return [Variant("raw store", raw, finetune=raw),
            Variant("JPEG store, quality 90", q90, finetune=q90),
            Variant("JPEG store, quality 75", q75, finetune=q75)]


EXPERIMENTS = {
    "frames": Experiment("Table 2", "which frames the teacher sees", _frames,
                         [("a random frame beats the centre frame", "random frame", "centre frame"),
                          ("2 random frames beat 1", "2 random frames", "random frame")]),
    "loss": Experiment("Table 3", "soft-target cross-entropy vs MSE on logits", _loss,
                       [("cross-entropy beats MSE", "soft-target CE", "MSE on logits (lr / 10)")]),
    "entropy": Experiment("Fig. 6", "dropping clips whose teacher targets are uncertain", _entropy,
                          [("dropping about 50% holds or helps",
                            "drop 50%", "keep all")]),
    # Table 4 claims that DistInit is not tied to one source of videos (Kinetics 40.3,
    # Sports-1M 39.9: about equal) and gains a little from their union (41.8). Corpus size at a
    # fixed number of training clips is ours, not a claim of the paper.
    "data": Experiment("Table 4", "corpus size, a second corpus and their union", _data,
                       [("the two corpora teach about equally", "second corpus",
                         "first corpus, 100%"),
                        ("the union beats the first corpus", "union of both", "first corpus, 100%"),
                        ("(ours) more videos help at a fixed number of clips (100% vs 25%)",
                         "first corpus, 100%", "first corpus, 25%")]),
    "teachers": Experiment("Sec. 4.3", "object teacher, scene teacher, both", _teachers,
                           [("objects teach actions better than scenes",
                             "objects (ImageNet analog)", "scenes (Places analog)")],
                           scenes=True),
    "temperature": Experiment("beyond the paper", "softmax temperature of the targets",
                              _temperature, []),
    "schedule": Experiment("the demo's recipe", "how long to distill", _schedule,
                           [("10 epochs beat 5", "10 epochs", "5 epochs"),
                            ("20 epochs beat 10", "20 epochs", "10 epochs")]),
    "flow": Experiment("Table 5", "a flow student: scratch, mean-inflated, DistInit", _flow,
                       [("DistInit beats mean inflation for flow", "flow, DistInit",
                         "flow, mean-inflated"),
                        ("mean inflation beats scratch for flow", "flow, mean-inflated",
                         "flow, scratch"),
                        ("fusing RGB and flow beats RGB alone", "two-stream", "RGB, DistInit")],
                       after=hooks.fusion),
    "modist": Experiment("MoDist", "motion distillation vs RGB-only contrastive, DistInit, "
                         "scratch", _modist,
                         [("MoDist beats RGB-only contrastive", "MoDist", "RGB-only contrastive"),
                          ("MoDist beats scratch", "MoDist", "scratch"),
                          ("DistInit beats MoDist", "DistInit", "MoDist"),
                          ("adding DistInit's loss helps MoDist", "MoDist + DistInit loss",
                           "MoDist")],
                         after=hooks.gradcam),
    "cache": Experiment("FKD", "teacher targets cached once vs live teachers", _cache,
                        [("live teachers beat cached targets (8 boxes)", "live teachers",
                          "cached, 8 boxes"),
                         ("8 cached boxes beat 2", "cached, 8 boxes", "cached, 2 boxes"),
                         ("float16 beats top-5", "cached, 8 boxes", "cached, 8 boxes, top-5")]),
    "store": Experiment("issue 28", "a compressed (JPEG) clip store against the raw one",
                        _store,
                        [("a JPEG store (quality 90) trains about equally to the raw store",
                          "JPEG store, quality 90", "raw store"),
                         ("a JPEG store (quality 75) trains about equally to the raw store",
                          "JPEG store, quality 75", "raw store")]),
    "auxskd": Experiment("auxSKD", "auxSKD before VSPP, VCOP, pace prediction and RSPNet on a small "
                         "corpus, against DistInit and MoDist", _auxskd,
                         [("auxSKD + VSPP beats VSPP alone", "auxSKD + VSPP", "VSPP"),
                          ("auxSKD improves VCOP", "auxSKD + VCOP", "VCOP"),
                          ("auxSKD improves pace prediction", "auxSKD + pace prediction",
                           "pace prediction"),
                          ("auxSKD improves RSPNet", "auxSKD + RSPNet", "RSPNet"),
                          ("VSPP beats scratch", "VSPP", "scratch"),
                          ("auxSKD + VSPP beats DistInit", "auxSKD + VSPP", "DistInit"),
                          ("auxSKD + VSPP beats MoDist", "auxSKD + VSPP", "MoDist")]),
}


def _distill_lr(demo: DemoConfig) -> float:
    return load_config(recipe_path(demo, "distill")).optim.lr
