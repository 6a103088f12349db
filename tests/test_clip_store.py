"""The decoded-clip store: frames decoded and resized once, read back by the rows a clip needs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pattern_frames
from torch.utils.data import DataLoader

from distinit import cli
from distinit.build import clip_dataset, prepare_data
from distinit.config import ConfigError, load_config
from distinit.data.clips.datasets import VideoClipDataset
from distinit.data.clips.sampling import ClipSpec
from distinit.data.clips.transforms import IMAGENET_STD, ClipTransform, resize_short_side
from distinit.data.stores import clip_store, shards
from distinit.data.stores.clip_store import build_clip_store, clip_store_for, find_clip_store
from distinit.data.video import decoders, frames
from distinit.data.video import io as video
from distinit.data.video.frames import Decoder, StoredFrames
from distinit.data.video.io import read_all_frames, read_frames, write_video
from distinit.engine.checkpoint import load_checkpoint
from distinit.errors import UserError
from distinit.jobs.store_clips import main as store_clips_main

RESIZE = 36
# The store rounds the resized frames to uint8, decoding on the fly keeps them float: a pixel
# differs by at most half a grey level, 0.5 / 255, i.e. 0.5 / 255 / std after normalisation.
TOLERANCE = 0.5 / 255 / min(IMAGENET_STD) + 1e-5


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    """Five short videos: landscape and portrait, of different lengths."""
    root = tmp_path_factory.mktemp("videos")
    out = []
    for i, (num_frames, height, width) in enumerate([(12, 48, 64), (9, 64, 48), (16, 48, 64),
                                                     (7, 40, 40), (10, 48, 80)]):
        path = root / f"v{i}.mp4"
        write_video(path, pattern_frames(num_frames, height, width), fps=10, gop=4)
        out.append(path)
    return out


def _transform(mode: str) -> ClipTransform:
    return ClipTransform(train=mode == "train", resize=RESIZE, crop=32)


def _pair(videos, folder, mode):
    kwargs = dict(clips=ClipSpec(4, 2, mode, num_clips=2 if mode == "test" else 1),
                  transform=_transform(mode), seed=5)
    return (VideoClipDataset(videos, **kwargs),
            VideoClipDataset(videos, frames=StoredFrames(folder, videos), **kwargs))


@pytest.mark.parametrize("mode", ["train", "test"])
def test_store_clips_equal_decoded_clips_within_rounding(videos, tmp_path, mode, monkeypatch):
    folder = build_clip_store(videos, tmp_path, RESIZE, "pyav", shard_size=2)
    assert folder == clip_store.store_folder(tmp_path, videos)
    store = shards.Store(folder, "clip store")
    for v in videos:  # every frame, resized once: the short side is RESIZE
        rows = store.get(v, "frames")
        assert rows.dtype == np.uint8 and min(rows.shape[1:3]) == RESIZE
        assert rows.shape[0] == len(read_all_frames(v))
        x = torch.from_numpy(rows).permute(3, 0, 1, 2)
        assert resize_short_side(x, RESIZE) is x  # so ClipTransform does not resize again
    plain, stored = _pair(videos, folder, mode)
    expected = [plain[i] for i in range(3 * len(plain), 4 * len(plain))]  # pass 3
    # From the store nothing is decoded, and a clip reads only rows min..max of its frames.
    monkeypatch.setattr(frames, "read_frames", None)
    monkeypatch.setattr(frames, "probe", None)
    spans = []
    real_get = shards.Store.get
    monkeypatch.setattr(shards.Store, "get", lambda self, v, name, rows=None: spans.append(rows)
                        or real_get(self, v, name, rows))
    for item, expect in zip(range(3 * len(plain), 4 * len(plain)), expected):
        got = stored[item]
        assert got["index"] == expect["index"] and got["bad"] == 0
        assert (got["video"] - expect["video"]).abs().max() <= TOLERANCE
        indices = stored.clip_indices(item)
        assert spans[-1] == slice(min(indices), max(indices) + 1)
    # A loader worker (forked) or a pickled copy (spawned) opens the shards itself.
    again = pickle.loads(pickle.dumps(stored))
    assert torch.equal(again[1]["video"], stored[1]["video"])
    batches = list(DataLoader(stored, batch_size=len(stored), num_workers=2))
    assert torch.equal(batches[0]["video"][2], stored[2]["video"])


def test_store_without_resize_holds_the_decoded_frames(videos, tmp_path):
    folder = build_clip_store(videos[:2], tmp_path, 0, "pyav")
    clips = ClipSpec(3, mode="test", num_clips=2)
    plain = VideoClipDataset(videos[:2], clips=clips)
    stored = VideoClipDataset(videos[:2], clips=clips, frames=StoredFrames(folder, videos[:2]))
    assert all(torch.equal(plain[i]["video"], stored[i]["video"]) for i in range(len(plain)))


def test_stopped_build_resumes_writing_only_the_missing_shard(videos, tmp_path, monkeypatch):
    folder = build_clip_store(videos, tmp_path, RESIZE, "pyav", shard_size=2)
    files = sorted(folder.glob("shard-*.safetensors"))
    assert [f.name for f in files] == [shards.shard_name(i) for i in range(3)]
    stamps = {f.name: f.stat().st_mtime_ns for f in files}
    files[1].unlink()
    with pytest.raises(UserError, match="incomplete"):  # a dataset will not read half a store
        StoredFrames(folder, videos)
    decoded = []
    monkeypatch.setattr(clip_store, "read_all_frames",
                        lambda path, *args: decoded.append(path) or read_all_frames(path, *args))
    assert build_clip_store(videos, tmp_path, RESIZE, "pyav", shard_size=2) == folder
    assert decoded == videos[2:4]  # the videos of shard 1, and no others
    assert files[1].is_file()
    assert {f.name: f.stat().st_mtime_ns for f in (files[0], files[2])} == {
        n: stamps[n] for n in (files[0].name, files[2].name)}
    assert not list(folder.glob(".*.tmp"))  # no temporary files left
    decoded.clear()
    build_clip_store(videos, tmp_path, RESIZE, "pyav", shard_size=2)  # complete: a no-op
    assert decoded == []


def test_store_made_with_another_resize_is_refused_not_used(videos, tmp_path):
    folder = build_clip_store(videos, tmp_path, RESIZE, "pyav")
    for build in (lambda: build_clip_store(videos, tmp_path, 40, "pyav"),
                  lambda: clip_store_for(videos, tmp_path, 40, "pyav")):  # a run's path
        with pytest.raises(UserError) as info:
            build()
        message = str(info.value)
        assert "\n" not in message and "differs in: resize" in message
        assert str(folder) in message and "distinit store-clips" in message
    # Nor is it taken for part of its videos, or once a file has changed.
    assert find_clip_store(tmp_path, videos[1:], RESIZE, "pyav") == folder
    assert find_clip_store(tmp_path, videos[1:], 40, "pyav") is None
    assert find_clip_store(tmp_path, videos[1:], RESIZE, "torchcodec") is None
    changed = tmp_path / "changed"
    changed.mkdir()
    copies = [changed / v.name for v in videos[:2]]
    for v, c in zip(videos, copies):
        c.write_bytes(v.read_bytes())
    build_clip_store(copies, tmp_path, RESIZE, "pyav")
    assert find_clip_store(tmp_path, copies[:1], RESIZE, "pyav") is not None
    write_video(copies[1], pattern_frames(5), fps=10)  # a new size and time: the store is stale
    assert find_clip_store(tmp_path, copies[:1], RESIZE, "pyav") is None


def test_corrupt_video_is_skipped_at_build_and_by_the_dataset(videos, make_bad_video,
                                                                tmp_path, capsys):
    files = [videos[0], make_bad_video("random_bytes"), videos[2]]
    folder = build_clip_store(files, tmp_path / "cache", RESIZE, "pyav")
    assert f"skipping video {files[1]}" in capsys.readouterr().out
    ds = VideoClipDataset(files, [0, 1, 2], clips=ClipSpec(4), frames=StoredFrames(folder, files),
                          transform=_transform("train"))
    items = [ds[i] for i in range(len(ds))]
    assert [item["bad"] for item in items] == [0, 1, 0] and items[1]["video_idx"] == 2
    assert "did not decode when the clip store was built" in capsys.readouterr().err
    assert ds.bad.report().startswith("1 of 3 videos skipped")


def test_dataset_refuses_a_store_made_for_other_videos(videos, tmp_path):
    folder = build_clip_store(videos[:2], tmp_path, RESIZE, "pyav")
    with pytest.raises(UserError, match=r"made for other videos \(1 of these"):
        StoredFrames(folder, videos[1:3])
    with pytest.raises(UserError, match="no clip store at"):
        StoredFrames(tmp_path, videos)  # the parent, not a store
    with pytest.raises(UserError, match="cache_dir"):
        frames.frame_source("store")


def test_a_dataset_builds_no_store_the_preparation_step_does(videos, tmp_path):
    dc = load_config(None, ["data.cache=store", f"data.cache_dir={tmp_path}", "data.resize=36",
                            "data.crop=32"]).data
    with pytest.raises(UserError, match="distinit store-clips") as info:
        clip_dataset(dc, videos[:2], None, True, 0)
    assert "\n" not in str(info.value) and not list(tmp_path.iterdir())
    prepare_data(dc, videos)  # the whole list: its store serves any part of it
    assert len(list(tmp_path.iterdir())) == 1
    ds = clip_dataset(dc, videos[:2], None, True, 0)
    assert isinstance(ds.frames, StoredFrames) and len(ds.frames.frames(videos[1], [0, 2])) == 2
    prepare_data(dc, videos[1:])  # found: nothing new built
    assert len(list(tmp_path.iterdir())) == 1


# ---- the command and a run on the tiny synthetic world ---------------------------------------

SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=36",
         "data.crop=32", "data.num_workers=0", "data.num_test_clips=2", "optim.batch_size=4",
         "optim.epochs=1", "log_every=1"]


def store_clips(argv: list[str]) -> int:
    return cli.main(["store-clips", *argv])


def test_store_clips_command_stores_the_corpus_and_both_splits(world, labeled, tmp_path,
                                                               capsys):
    config = tmp_path / "run.yaml"
    # Any run's file will do, with its method's own section.
    config.write_text("data:\n  resize: 36\nauxskd:\n  dim: 16\npretext:\n  n_clips: 3\n")
    cache = tmp_path / "cache"
    argv = [str(config), f"data.videos={world.corpus_dir}", *labeled, f"data.cache_dir={cache}"]
    assert store_clips(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-3:]
    assert [line.split(":")[0] for line in lines] == [
        "clip store of the corpus (data.videos)", "clip store of the train split 1",
        "clip store of the test split 1"]
    folders = sorted(p for p in cache.iterdir())
    assert len(folders) == 3 and all(f"in {f} (" in "".join(lines) for f in folders)
    assert all(line.endswith("MiB)") for line in lines)
    stamps = sorted(f.stat().st_mtime_ns for f in cache.glob("*/shard-*"))
    assert store_clips(argv) == 0  # done already: nothing rewritten
    assert sorted(f.stat().st_mtime_ns for f in cache.glob("*/shard-*")) == stamps


def test_store_clips_needs_a_cache_dir_and_videos(world, tmp_path, capsys):
    with pytest.raises(UserError, match="data.cache_dir"):
        store_clips_main([f"data.videos={world.corpus_dir}"])
    with pytest.raises(UserError, match="nothing to store"):
        store_clips_main([f"data.cache_dir={tmp_path}"])


def test_distill_and_finetune_run_from_the_store(world, teacher_file, labeled, tmp_path,
                                                 capsys):
    cache = tmp_path / "cache"
    store = [f"data.cache_dir={cache}", "data.cache=store"]
    assert store_clips([f"data.videos={world.corpus_dir}", *store, "data.resize=36"]) == 0
    teachers = f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]'
    assert cli.main(["distill", *SMALL, *store, teachers, f"data.videos={world.corpus_dir}",
                     f"out_dir={tmp_path / 'distill'}"]) == 0
    # The held-out video and the rest were both read from the corpus's store.
    assert len(list(cache.iterdir())) == 1
    weights = tmp_path / "distill" / "last.pt"
    assert load_checkpoint(weights)["config"]["data"]["cache"] == "store"
    # A run on videos with no store yet builds its own (here the two labeled splits).
    assert cli.main(["finetune", *SMALL, *store, *labeled, "model.init=checkpoint",
                     f"model.weights={weights}", f"out_dir={tmp_path / 'ft'}"]) == 0
    assert len(list(cache.iterdir())) == 3
    assert "decoding" in capsys.readouterr().out


# ---- decoding on a device ---------------------------------------------------------------------

def _has_torchcodec() -> str:
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except (ImportError, RuntimeError, OSError) as e:
        return str(e).splitlines()[0]
    return ""


@pytest.mark.skipif(bool(_has_torchcodec()), reason=f"torchcodec not importable: {_has_torchcodec()}")
def test_torchcodec_decode_device_cpu_is_the_default(videos, tmp_path):
    v = videos[0]
    assert video.probe(v, "torchcodec", "cpu") == video.probe(v, "torchcodec")
    assert np.array_equal(read_frames(v, [5, 1, 5], "torchcodec", device="cpu"),
                          read_frames(v, [5, 1, 5], "torchcodec"))
    assert np.array_equal(read_all_frames(v, "torchcodec", "cpu"), read_all_frames(v, "torchcodec"))
    clips = ClipSpec(4, mode="test", num_clips=2)
    a = VideoClipDataset(videos, clips=clips, frames=Decoder("torchcodec", "cpu"))
    b = VideoClipDataset(videos, clips=clips, frames=Decoder("torchcodec"))
    assert all(torch.equal(a[i]["video"], b[i]["video"]) for i in range(len(a)))
    folder = build_clip_store(videos[:2], tmp_path, RESIZE, "torchcodec", device="cpu")
    assert shards.Store(folder, "clip store").fingerprint["backend"] == "torchcodec"


def _one_line_error(make) -> str:
    with pytest.raises(UserError) as info:
        make()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_cuda_decoding_is_refused_in_one_line_before_decoding(videos, tmp_path, monkeypatch):
    monkeypatch.setattr(video, "_backend_for", None)  # nothing may be decoded or probed
    assert "needs data.backend=torchcodec" in _one_line_error(
        lambda: Decoder(device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "sees no CUDA GPU" in _one_line_error(lambda: Decoder("torchcodec", "cuda"))
    assert "unknown decode device" in _one_line_error(lambda: Decoder(device="gpu"))
    assert "sees no CUDA GPU" in _one_line_error(  # and before a store is built
        lambda: build_clip_store(videos, tmp_path, RESIZE, "torchcodec", device="cuda"))
    assert not tmp_path.joinpath(clip_store.store_folder(tmp_path, videos).name).exists()
    # Forked loader workers cannot use CUDA: a run must load in-process, or from a store.
    dc = load_config(None, ["data.backend=torchcodec", "data.decode_device=cuda",
                            "data.num_workers=2", "data.resize=36", "data.crop=32"]).data
    assert "data.num_workers=0" in _one_line_error(
        lambda: clip_dataset(dc, videos, None, True, 0))
    with pytest.raises(ConfigError, match="data.decode_device must be one of cpu, cuda"):
        load_config(None, ["data.decode_device=gpu"])


@pytest.mark.skipif(bool(_has_torchcodec()) or torch.cuda.is_available(),
                    reason="needs torchcodec without a GPU (a CPU build says it has no CUDA)")
def test_cuda_decoding_with_a_cpu_build_of_torchcodec_is_refused(videos, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # torch would have a GPU
    decoders.torchcodec_cuda_missing.cache_clear()
    message = _one_line_error(lambda: Decoder("torchcodec", "cuda"))
    assert "torchcodec cannot decode on the GPU here (Unsupported device: cuda" in message
    assert "data.decode_device=cpu" in message
