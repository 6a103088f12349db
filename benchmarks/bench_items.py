"""Milliseconds per dataset item of the demo's distillation data, live teacher vs cached targets.

    .venv/bin/python benchmarks/bench_items.py --world WORLD_DIR --teacher TEACHER.pt \
        --cache TARGETS_DIR [--items 2000]

WORLD_DIR is a synthetic world (`distinit synth`), TEACHER.pt the demo's teacher and
TARGETS_DIR a target cache made for them with 8 boxes (e.g. the one `distinit reproduce cache`
writes). One process, no loader workers, the disk cache of decoded videos warm: what the
demo's loop pays per clip before the model runs. Two passes each; the second is the warm one.
"""

from __future__ import annotations

import argparse
import time

from distinit.build import resolve_normalization
from distinit.config import load_config
from distinit.methods.distinit import build


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True)
    p.add_argument("--teacher", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--items", type=int, default=2000)
    a = p.parse_args()
    args = ["model.arch=r3d_18", "model.width=16", "model.layers=[1,1,1,1]", "data.resize=36",
            "data.crop=32", "data.flip=false", "data.mean=[0.5,0.5,0.5]",
            "data.std=[0.25,0.25,0.25]", "data.cache=disk", f"data.cache_dir={a.world}/cache",
            "data.num_workers=0", f"data.videos={a.world}/corpus",
            f"distill.teachers=[{{spec: 'ckpt:{a.teacher}'}}]"]
    live = build(resolve_normalization(load_config(None, args))).dataset
    cached = build(resolve_normalization(load_config(
        None, [*args, f"distill.target_cache={a.cache}", "distill.cache_crops=8"]))).dataset
    for name, ds in (("live", live), ("cached", cached), ("live", live), ("cached", cached)):
        t = time.perf_counter()
        for i in range(a.items):
            ds[i]
        print(f"{name:<8}{(time.perf_counter() - t) / a.items * 1e3:.2f} ms per item")


if __name__ == "__main__":
    main()
