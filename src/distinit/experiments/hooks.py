"""What an experiment adds after its variants have run, from their finished runs: late fusion
of two streams, Grad-CAM attribution against the world's object masks."""

from __future__ import annotations

from pathlib import Path

import torch

from distinit.build import init_student, input_channels, labeled_split, make_student
from distinit.config import load_config
from distinit.engine.checkpoint import load_checkpoint, model_state
from distinit.jobs.evaluate import fuse
from distinit.optional import MissingDependency


def fusion(ctx) -> dict[str, list[dict]]:
    """Late fusion (mean softmax) of the RGB and flow DistInit students, per seed."""
    rows = []
    for rgb, flow in zip(ctx.results["RGB, DistInit"], ctx.results["flow, DistInit"], strict=True):
        rows.append(fuse([rgb["predictions"], flow["predictions"]]))
    return {"two-stream: RGB + flow DistInit (late fusion)": rows}


def gradcam(ctx) -> dict[str, list[dict]]:
    """Grad-CAM of every variant's pretrained encoder (target: its own embedding) and of its
    fine-tuned network (target: the true class) on split 1's test videos, against the objects'
    masks: `in_mask` and `in_mask_ft` of each run, and a picture of seed 0's maps."""
    from distinit.tools.attribution import attribution, picture, world_clips

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
