"""The numbers of docs/SCALING.md: counted FLOPs of the student step and the teachers, and what
the paper's recipe costs at a given per-GPU rate and measured per-core data rates.

    .venv/bin/python benchmarks/scaling.py --decode-per-core 5.1 --store-per-core 60

FLOPs are counted here (torch.utils.flop_counter) on our R(2+1)D-18 / R3D-18 students and on
ResNet-50 and CLIP ViT-B/16 image towers (timm's ViT-B/16 at 224 px, the same shape as CLIP's
image encoder). GPU rates are not measured (no GPU was lent): they are given as an MFU of the
H100's dense bf16 peak, and every table says so.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from distinit.config import DataConfig, DistillConfig
from distinit.data.corpus.sample import uniform_corpus
from distinit.data.stores.size import clip_store_bytes
from distinit.models.flops import forward_flops, training_flops
from distinit.models.image_resnet import build_image_model
from distinit.models.students import build_student
from distinit.optional import import_timm
from distinit.targets.cache_size import cache_bytes, teacher_frames

H100_BF16 = 989e12  # dense bf16 FLOP/s
CLIPS = 45 * 1_000_000  # the paper: 45 epochs of 1M clips
# Kinetics-400's train set, ~10 s at 30 fps, decoded at 320x240 (short side 128: 170x128)
K400 = uniform_corpus(240_000, 300, 240, 320)


def student_step_flops(arch: str) -> float:
    return training_flops(build_student(arch, num_classes=400), torch.randn(1, 3, 8, 112, 112))


def image_flops(model) -> float:
    return forward_flops(model, torch.randn(1, 3, 224, 224))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--decode-per-core", type=float, required=True,
                   help="data-only clips/s per core decoding on the fly (distinit bench)")
    p.add_argument("--store-per-core", type=float, required=True,
                   help="data-only clips/s per core from the clip store (distinit bench)")
    p.add_argument("--mfu", default="0.25,0.5", help="MFUs to assume for the GPU step")
    p.add_argument("--crops", type=int, default=4, help="cached boxes per video")
    p.add_argument("--frame-step", type=int, default=8, help="cache every Nth frame")
    p.add_argument("--topk", type=int, default=10)
    args = p.parse_args()

    step = {a: student_step_flops(a) for a in ("r2plus1d_18", "r3d_18")}
    resnet50 = image_flops(build_image_model("resnet50", num_classes=1000).eval())
    timm = import_timm()
    vit = image_flops(timm.create_model("vit_base_patch16_224", pretrained=False,
                                        num_classes=512).eval())
    print("## Counted FLOPs (torch.utils.flop_counter)\n")
    print("| what | GFLOP |\n|---|---|")
    for a, f in step.items():
        print(f"| {a} training step, one 8x112x112 clip (forward + backward) | {f / 1e9:.1f} |")
    print(f"| ResNet-50 forward, one 224-px frame | {resnet50 / 1e9:.1f} |")
    print(f"| ViT-B/16 (CLIP's image tower) forward, one 224-px frame | {vit / 1e9:.1f} |")

    s = step["r2plus1d_18"]
    print("\n## The paper's recipe (45 epochs of 1M clips), R(2+1)D-18, cached targets\n")
    print("GPU rate = MFU x 989 TFLOP/s (H100 dense bf16) / FLOP per clip: assumed, not "
          "measured. Cores: what it takes to feed that rate at the measured per-core rates.\n")
    print("| MFU | clips/s per GPU | GPUs | wall time | cores decoding on the fly | "
          "cores reading the clip store |\n|---|---|---|---|---|---|")
    for mfu in (float(m) for m in args.mfu.split(",")):
        rate = mfu * H100_BF16 / s
        for gpus in (8, 64):
            hours = CLIPS / (rate * gpus) / 3600
            print(f"| {mfu:.0%} | {rate:,.0f} | {gpus} | {hours:.2f} h | "
                  f"{gpus * rate / args.decode_per_core:,.0f} | "
                  f"{gpus * rate / args.store_per_core:,.0f} |")

    clip_bytes = 8 * 128 * 170 * 3  # rows first..last of an 8-frame clip, stride 1
    print(f"\nReading the clip store: {clip_bytes / 1e3:.0f} KB per 8-frame clip, so "
          + ", ".join(f"{8 * mfu * H100_BF16 / s * clip_bytes / 1e9:.1f} GB/s per 8-GPU node "
                      f"at {mfu:.0%} MFU" for mfu in (float(m) for m in args.mfu.split(",")))
          + " (random reads, from page cache or NVMe).")
    # The estimators `distinit plan`, `store-clips` and `cache-targets` use.
    data = DataConfig(resize=128, crop=112)
    distill = DistillConfig(cache_crops=args.crops, cache_frame_step=args.frame_step)
    topk = replace(distill, cache_dtype="topk", cache_topk=args.topk)
    store = clip_store_bytes(K400, 128).value
    v = K400.shapes[0]
    print(f"\n## Storage for Kinetics-400's train set ({K400.videos:,} videos of "
          f"~{v.num_frames} frames)\n")
    print("| store | size |\n|---|---|")
    print(f"| clip store, every frame at 170x128 (short side 128), uint8 | "
          f"{store / 1e12:.1f} TB |")
    for name, classes in (("ImageNet (1000)", [1000]), ("ImageNet + Places-365", [1000, 365])):
        print(f"| target cache, {name} classes, {args.crops} boxes, every {args.frame_step}th "
              f"frame, float16 | {cache_bytes(K400, data, distill, classes).value / 1e9:,.0f} GB |")
    print(f"| target cache, any classes, {args.crops} boxes, every {args.frame_step}th frame, "
          f"top-{args.topk} | {cache_bytes(K400, data, topk, [1000]).value / 1e9:,.1f} GB "
          "(per teacher) |")

    print("\n## A CLIP ViT-B/16 teacher, live vs cached (R(2+1)D-18 student, same MFU for "
          "both)\n")
    cached_frames = teacher_frames(K400, data, distill).value
    print("| teacher frames per clip | live: step FLOP vs student alone | live: teacher "
          "FLOP over the recipe | cache: teacher FLOP, built once |\n|---|---|---|---|")
    for k in (1, 4):
        print(f"| {k} | {1 + k * vit / s:.2f}x | {CLIPS * k * vit / 1e18:.2f} EFLOP | "
              f"{cached_frames * vit / 1e18:.2f} EFLOP ({args.crops} boxes, every "
              f"{args.frame_step}th frame) |")
    print(f"\nResNet-50 for comparison: live with 1 frame adds {resnet50 / s:.1%} to the step.")


if __name__ == "__main__":
    main()
