"""`distinit store-clips CONFIG.yaml [key=value ...]`: decode every video of a config's data once
into clip stores (`distinit.data.stores.clip_store`), ahead of the runs that read them with
`data.cache=store`. Here, above `methods`, because any method's config file will do."""

from __future__ import annotations

from pathlib import Path

from distinit.arguments import Parser
from distinit.config import DataConfig, config_from_args
from distinit.data.corpus.sample import DEFAULT_SAMPLE, sample_corpus
from distinit.data.labels.splits import load_labeled
from distinit.data.stores import shards
from distinit.data.stores.clip_store import WHAT, build_clip_store, store_folder
from distinit.data.stores.disk_room import check_room, human_bytes
from distinit.data.stores.size import clip_store_bytes
from distinit.data.video.io import list_videos
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


def announce(dc: DataConfig, lists: list[tuple[str, list[Path]]], show: bool = True,
             check: bool = True) -> None:
    """Before a build: each store's expected size (from a probed sample of its videos,
    `data/stores/size.py`), printed when `show`; with `check`, refused in one line when
    data.cache_dir's disk lacks the room for what is not written yet."""
    needed, raw = 0.0, dc.store_codec == "raw"
    for name, videos in lists:
        sample = sample_corpus(videos, DEFAULT_SAMPLE, dc.backend, dc.frame_template)
        size = clip_store_bytes(sample, dc.resize)  # raw only, so far: bytes_per_frame for more
        folder = store_folder(dc.cache_dir, videos)
        written = sum(f.stat().st_size for f in folder.glob("shard-*.safetensors"))
        needed += max(0.0, size.value - written)
        if show:
            spread = f" +-{size.rel_error:.0%}" if size.rel_error >= 0.005 else ""
            what = (f"expect about {human_bytes(size.value)}{spread}" if raw else
                    f"{human_bytes(size.value)}{spread} if raw; {dc.store_codec} is smaller, not "
                    "estimated, and the disk's room is not checked")
            print(f"{WHAT} of the {name}: {what} ({human_bytes(written)} already written), "
                  f"every frame at short side {dc.resize or 'as decoded'}; estimated from "
                  f"{sample.source}", flush=True)
    if check and raw:
        check_room(dc.cache_dir, needed, WHAT, "set data.cache_dir to a folder on a disk with "
                   "room (or a smaller data.resize, or data.store_codec=jpeg)")


def main(argv: list[str]) -> int:
    """The stores of `data.videos` and of the labeled train and test split under
    `data.cache_dir`. Under `torchrun` each process writes its share of the shards."""
    parser = Parser(prog="distinit store-clips")
    parser.add_argument("args", nargs="*", help="CONFIG.yaml [key=value ...]")
    parser.add_argument("--no-room-check", action="store_true",
                        help="start even when the estimated size exceeds the free space (the estimate "
                             "comes from a sample; a compressing file system holds more)")
    ns = parser.parse_intermixed_args(argv)
    cfg = config_from_args(ns.args, cls=any_config_class())
    dc = cfg.data
    if not dc.cache_dir:
        raise UserError("store-clips writes its stores under data.cache_dir; set it, e.g. "
                        "data.cache_dir=runs/cache (and data.cache=store in the runs)")
    rank = dist.setup(cfg.device, cfg.dist_timeout).rank
    lists = video_lists(dc)
    if not lists:
        raise UserError("nothing to store: set data.videos (an unlabeled corpus) and/or "
                        "data.video_root and data.split_dir (a labeled dataset)")
    announce(dc, lists, rank == 0, check=not ns.no_room_check)
    for name, videos in lists:
        folder = build_clip_store(videos, dc.cache_dir, dc.resize, dc.backend,
                                  frame_template=dc.frame_template, device=dc.decode_device,
                                  codec=dc.store_codec, quality=dc.store_quality)
        if rank == 0:
            store = shards.Store(folder, WHAT, verify=False)  # just checked by the build
            skipped = sum(not store.has(v) for v in videos)
            note = f"; {skipped} did not decode and were skipped" if skipped else ""
            print(f"{WHAT} of the {name}: {len(videos)} videos{note}, short side "
                  f"{dc.resize or 'as decoded'}, in {folder} ({_size(folder)})")
    return 0
