"""The experiments of `distinit reproduce`, as data: each is a list of variants (a pretraining
method and its overrides, or scratch or inflated weights; the stages before it), the claims its
rows test, and an optional hook that adds rows from the finished runs. Adding an experiment, or a
row to one, is an edit of this file only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distinit.config import load_config
from distinit.data.synth import generate_world
from distinit.data.synth.world import with_overrides
from distinit.experiments import hooks
from distinit.experiments.claims import Claim
from distinit.experiments.experiment import Context, Experiment, Variant
from distinit.experiments.table1 import TABLE1
from distinit.experiments.world import DemoConfig, recipe_path


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


# MSCL's flow: from frame 2j to 2j + 8 (tools/misc/flow_extraction_meg_k400.py:287-288,
# tools/RAFT/inference.py:192-194) of Kinetics at its native rate (about 25 fps): 0.32 s, which
# the world's videos span in fewer frames. Drawn as a colour-wheel image (ssl_aug_v2.py:115).
MSCL_GAP_SECONDS = 8 / 25
GAP = "MSCL's gap"


def _modist_flow(ctx: Context) -> list[Variant]:
    """MoDist's motion pathway fed our flow (t to t + 1, (dx, dy) vectors) against MSCL's: its
    frame gap in seconds, a colour-wheel image, and both."""
    fps = ctx.world.params.fps
    gap = max(1, round(MSCL_GAP_SECONDS * fps))
    note = (f"{GAP}: 8 frames of 25-fps Kinetics = {MSCL_GAP_SECONDS:.2f} s = {gap} frames "
            f"of the world's {fps} fps (flow from frame t to t + {gap}).")
    if note not in ctx.notes:  # the variants are listed more than once
        ctx.notes.append(note)
    rgb = ["data.flow_format=rgb"]
    return [Variant("t to t+1, vectors", ctx.flow("corpus"), method="modist"),
            Variant(f"{GAP}, vectors", ctx.flow("corpus", gap), method="modist"),
            Variant("t to t+1, colour wheel", [*ctx.flow("corpus"), *rgb], method="modist"),
            Variant(f"{GAP}, colour wheel (MSCL's flow)", [*ctx.flow("corpus", gap), *rgb],
                    method="modist")]


def _video_list(ctx: Context, name: str, videos: list[str], folder: Path | None = None) -> Path:
    path = (folder or ctx.out) / f"corpus_{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(videos) + "\n")
    return path


TASKS = {"vspp": "VSPP", "vcop": "VCOP", "pace": "pace prediction", "rspnet": "RSPNet"}


def _small_corpus(ctx: Context) -> list[str]:
    """auxSKD's setting: a quarter of the world's corpus, each epoch as many clips as one pass
    over the whole. Its list is kept in the `auxskd` experiment's folder, so that the stages of
    `auxskd` and `auxskd-factors` with the same settings are one run."""
    videos = sorted(map(str, ctx.world.corpus_videos))
    path = _video_list(ctx, "25", videos[: len(videos) // 4], ctx.out.parent / "auxskd")
    return [f"data.videos={path}", f"optim.epoch_size={len(videos)}"]


def _auxskd(ctx: Context) -> list[Variant]:
    """auxSKD's setting: a SMALL unlabeled corpus (a quarter of the world's), each pretext task
    alone and after the auxSKD stage, then DistInit and MoDist on the same quarter, and scratch.
    Every pretraining stage sees as many clips as one pass over the whole corpus per epoch, so
    the corpus is small, not the compute."""
    data = _small_corpus(ctx)
    aux = ("auxskd", data)
    out = []
    for task, label in TASKS.items():
        out += [Variant(label, data, method=task),
                Variant(f"auxSKD + {label}", data, method=task, before=[aux])]
    return [*out, Variant("auxSKD alone", method="", before=[aux]), Variant("DistInit", data),
            Variant("MoDist", [*ctx.flow("corpus"), *data], method="modist"),
            Variant("scratch", method="", init="scratch")]


# auxSKD's stage with one of issue 18's changes undone at a time (`auxskd-factors`), each
# followed by the same VSPP stage: the official pair of unlike pace against two clips at the same
# pace; per-frame against per-clip colour jitter; with and without the reconstructed predictor;
# a queue of about one key per video against a quarter of the corpus (the official 15,360 is
# about half of its k100 list, auxSKD/train.py:47, 296).
AUX_FACTORS = {"same pace": ["auxskd.views=rate", "auxskd.rate=1"],
               "colour per clip": ["data.color_per_frame=false"],
               "no predictor": ["auxskd.predictor=false"],
               "queue of a quarter": ["auxskd.queue=256"]}


def _auxskd_factors(ctx: Context) -> list[Variant]:
    data = _small_corpus(ctx)
    out = [Variant("VSPP", data, method="vspp"),
           Variant("auxSKD + VSPP", data, method="vspp", before=[("auxskd", data)])]
    return out + [Variant(f"auxSKD ({name}) + VSPP", data, method="vspp",
                          before=[("auxskd", [*data, *change])])
                  for name, change in AUX_FACTORS.items()]


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
    "table1": TABLE1,
    "frames": Experiment("Table 2", "which frames the teacher sees", _frames, [
        Claim("a random frame beats the centre frame", "random frame", "centre frame"),
        Claim("2 random frames beat 1", "2 random frames", "random frame")]),
    "loss": Experiment("Table 3", "soft-target cross-entropy vs MSE on logits", _loss, [
        Claim("cross-entropy beats MSE", "soft-target CE", "MSE on logits (lr / 10)")]),
    "entropy": Experiment("Fig. 6", "dropping clips whose teacher targets are uncertain", _entropy, [
        Claim("dropping about 50% holds or helps", "drop 50%", "keep all", "not_worse")]),
    # Table 4 claims that DistInit is not tied to one source of videos (Kinetics 40.3,
    # Sports-1M 39.9: about equal) and gains a little from their union (41.8). Corpus size at a
    # fixed number of training clips is ours, not a claim of the paper.
    "data": Experiment("Table 4", "corpus size, a second corpus and their union", _data, [
        Claim("the two corpora teach about equally", "second corpus", "first corpus, 100%",
              "equal"),
        Claim("the union beats the first corpus", "union of both", "first corpus, 100%"),
        Claim("(ours) more videos help at a fixed number of clips (100% vs 25%)",
              "first corpus, 100%", "first corpus, 25%")]),
    "teachers": Experiment("Sec. 4.3", "object teacher, scene teacher, both", _teachers, [
        Claim("objects teach actions better than scenes", "objects (ImageNet analog)",
              "scenes (Places analog)")], scenes=True),
    "temperature": Experiment("beyond the paper", "softmax temperature of the targets",
                              _temperature, []),
    "schedule": Experiment("the demo's recipe", "how long to distill", _schedule, [
        Claim("10 epochs beat 5", "10 epochs", "5 epochs"),
        Claim("20 epochs beat 10", "20 epochs", "10 epochs")]),
    "flow": Experiment("Table 5", "a flow student: scratch, mean-inflated, DistInit", _flow, [
        Claim("DistInit beats mean inflation for flow", "flow, DistInit", "flow, mean-inflated"),
        Claim("mean inflation beats scratch for flow", "flow, mean-inflated", "flow, scratch"),
        Claim("fusing RGB and flow beats RGB alone", "two-stream", "RGB, DistInit")],
        after=hooks.fusion),
    "modist": Experiment("MoDist", "motion distillation vs RGB-only contrastive, DistInit, "
                         "scratch", _modist, [
        Claim("MoDist beats RGB-only contrastive", "MoDist", "RGB-only contrastive"),
        Claim("MoDist beats scratch", "MoDist", "scratch"),
        Claim("DistInit beats MoDist", "DistInit", "MoDist"),
        Claim("adding DistInit's loss helps MoDist", "MoDist + DistInit loss", "MoDist")],
        after=hooks.gradcam),
    "modist-flow": Experiment(
        "MoDist", "MoDist's flow as we compute it against MSCL's (frame gap, colour wheel)",
        _modist_flow, [
            Claim(f"{GAP} helps MoDist", f"{GAP}, vectors", "t to t+1, vectors"),
            Claim("the colour wheel helps MoDist", "t to t+1, colour wheel", "t to t+1, vectors"),
            Claim("MSCL's flow beats ours", f"{GAP}, colour wheel (MSCL's flow)",
                  "t to t+1, vectors")]),
    "cache": Experiment("FKD", "teacher targets cached once vs live teachers", _cache, [
        Claim("live teachers beat cached targets (8 boxes)", "live teachers", "cached, 8 boxes"),
        Claim("8 cached boxes beat 2", "cached, 8 boxes", "cached, 2 boxes"),
        Claim("float16 beats top-5", "cached, 8 boxes", "cached, 8 boxes, top-5")]),
    "store": Experiment("issue 28", "a compressed (JPEG) clip store against the raw one",
                        _store, [
        Claim("a JPEG store (quality 90) trains about equally to the raw store",
              "JPEG store, quality 90", "raw store", "equal"),
        Claim("a JPEG store (quality 75) trains about equally to the raw store",
              "JPEG store, quality 75", "raw store", "equal")]),
    "auxskd": Experiment("auxSKD", "auxSKD before VSPP, VCOP, pace prediction and RSPNet on a "
                         "small corpus, against DistInit and MoDist", _auxskd, [
        Claim("auxSKD + VSPP beats VSPP alone", "auxSKD + VSPP", "VSPP"),
        Claim("auxSKD improves VCOP", "auxSKD + VCOP", "VCOP"),
        Claim("auxSKD improves pace prediction", "auxSKD + pace prediction", "pace prediction"),
        Claim("auxSKD improves RSPNet", "auxSKD + RSPNet", "RSPNet"),
        Claim("VSPP beats scratch", "VSPP", "scratch"),
        Claim("auxSKD + VSPP beats DistInit", "auxSKD + VSPP", "DistInit"),
        Claim("auxSKD + VSPP beats MoDist", "auxSKD + VSPP", "MoDist")]),
    "auxskd-factors": Experiment(
        "auxSKD", "the auxSKD stage before VSPP with one factor changed at a time",
        _auxskd_factors,
        [Claim(f"{name} mends the hand-over to VSPP", f"auxSKD ({name}) + VSPP", "auxSKD + VSPP")
         for name in AUX_FACTORS] + [Claim("auxSKD + VSPP beats VSPP alone", "auxSKD + VSPP",
                                           "VSPP")]),
}


def _distill_lr(demo: DemoConfig) -> float:
    return load_config(recipe_path(demo, "distill")).optim.lr
