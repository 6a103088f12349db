"""Optical flow of the synthetic world's videos, computed once on first use.

`distinit flow` with its defaults (OpenCV DIS, uint8 within +-20 px) over the unlabeled corpus
and the action set, written under the world's folder (`flow/corpus`, `flow/actions`), so every
run on the world shares one copy. A finished folder is marked and not listed again.
"""

from __future__ import annotations

from pathlib import Path

from distinit.data.flow.compute import compute_flow
from distinit.data.synth.generate import available_cores
from distinit.data.synth.world import World

DONE = ".complete"


def world_flow(world: World, workers: int | None = None, gap: int = 1) -> dict[str, Path]:
    """{"corpus": flow folder, "actions": flow folder}: a run sets `data.flow_dir` to one and
    `data.flow_root` to the matching video folder (`world.corpus_dir`, `world.actions_videos`).
    `gap`: flow from frame t to t + gap (`distinit flow --gap`), in folders of its own."""
    name = "" if gap == 1 else f"-gap{gap}"
    folders = {"corpus": (world.corpus_dir, world.root / "flow" / f"corpus{name}"),
               "actions": (world.actions_videos, world.root / "flow" / f"actions{name}")}
    for which, (videos, out) in folders.items():
        if not (out / DONE).is_file():
            print(f"optical flow of the world's {which} (once) -> {out}", flush=True)
            compute_flow(videos, out, workers=workers or available_cores(), gap=gap)
            (out / DONE).write_text("")
    return {which: out for which, (_, out) in folders.items()}
