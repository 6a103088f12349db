"""`distinit store-clips CONFIG.yaml [key=value ...]`: decode every video of a config's data once
into clip stores (`distinit.data.clip_store`), ahead of the runs that read them with
`data.cache=store`. Here, above `methods`, because any method's config file will do."""

from __future__ import annotations

from pathlib import Path

from distinit.arguments import Parser
from distinit.config import DataConfig, config_from_args
from distinit.data import shards
from distinit.data.clip_store import WHAT, build_clip_store
from distinit.data.splits import load_labeled
from distinit.data.video import list_videos
from distinit.engine import dist
from distinit.errors import UserError
from distinit.methods import any_config_class


def video_lists(dc: DataConfig) -> list[tuple[str, list[Path]]]:
    """(name, videos) of each list a config reads: the unlabeled corpus `data.videos`, and the
    labeled train and test split (`data.video_root`, `data.split_dir`, `data.split`)."""
    lists = []
    if dc.videos:
        lists.append(("corpus (data.videos)", list_videos(dc.videos, dc.extensions)))
    if dc.video_root and dc.split_dir:
        for subset in ("train", "test"):
            split = load_labeled(dc.format, dc.video_root, dc.split_dir, dc.split, subset,
                                 name_template=dc.name_template)
            lists.append((f"{subset} split {dc.split}", split.videos))
    return lists


def _size(folder: Path) -> str:
    size = sum(f.stat().st_size for f in folder.glob("shard-*.safetensors"))
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def main(argv: list[str]) -> int:
    """The stores of `data.videos` and of the labeled train and test split under
    `data.cache_dir`. Under `torchrun` each process writes its share of the shards."""
    parser = Parser(prog="distinit store-clips")
    parser.add_argument("args", nargs="*", help="CONFIG.yaml [key=value ...]")
    ns = parser.parse_intermixed_args(argv)
    cfg = config_from_args(ns.args, cls=any_config_class())
    dc = cfg.data
    if not dc.cache_dir:
        raise UserError("store-clips writes its stores under data.cache_dir; set it, e.g. "
                        "data.cache_dir=runs/cache (and data.cache=store in the runs)")
    rank = dist.setup(cfg.device).rank
    lists = video_lists(dc)
    if not lists:
        raise UserError("nothing to store: set data.videos (an unlabeled corpus) and/or "
                        "data.video_root and data.split_dir (a labeled dataset)")
    for name, videos in lists:
        folder = build_clip_store(videos, dc.cache_dir, dc.resize, dc.backend,
                                  frame_template=dc.frame_template, device=dc.decode_device)
        if rank == 0:
            store = shards.Store(folder, WHAT, verify=False)  # just checked by the build
            skipped = sum(not store.has(v) for v in videos)
            note = f"; {skipped} did not decode and were skipped" if skipped else ""
            print(f"{WHAT} of the {name}: {len(videos)} videos{note}, short side "
                  f"{dc.resize or 'as decoded'}, in {folder} ({_size(folder)})")
    return 0
