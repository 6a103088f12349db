"""The compressed clip store (data.store_codec=jpeg, `distinit.data.stores.frame_codec`): frames kept as
JPEGs in the same shards, read back per frame, never taken for a store kept another way."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from conftest import pattern_frames
from test_store_builders import sigterm_on_read

from distinit import cli
from distinit.config import ConfigError, DataConfig, load_config
from distinit.data.stores import check as check_store
from distinit.data.stores import clip_store, frame_codec, shards
from distinit.data.stores.clip_store import build_clip_store, clip_store_for, find_clip_store
from distinit.data.video.frames import StoredFrames, frame_source
from distinit.data.video.io import read_all_frames
from distinit.engine.checkpoint import load_checkpoint
from distinit.engine.interrupt import Interrupted
from distinit.errors import UserError

RESIZE = 64
# JPEG at quality 90 (4:2:0) of these frames, resized from H.264: ~1.1 grey levels mean
# absolute error, whatever the CPU (libjpeg-turbo's SIMD paths differ by at most a level on a
# few pixels). 3 bounds it with room; a codec that kept the wrong frame or colour would be ~30.
JPEG_MAE = 3.0


@pytest.fixture
def videos(make_video, tmp_path) -> list[Path]:
    """Five short videos, landscape and portrait, of different lengths."""
    return [make_video(f"v{i}", num_frames=n, height=h, width=w, gop=4,
                       folder=tmp_path / "videos")
            for i, (n, h, w) in enumerate([(12, 96, 128), (9, 128, 96), (16, 96, 128),
                                           (7, 80, 80), (10, 96, 160)])]


def _jpeg(videos, cache_dir, quality=90, **kwargs) -> Path:
    return build_clip_store(videos, cache_dir, RESIZE, "pyav", codec="jpeg", quality=quality,
                            **kwargs)


@pytest.mark.parametrize("codec", sorted(frame_codec.CODECS))
def test_every_codec_reads_any_frames_as_reading_all_and_indexing(codec):
    frames = pattern_frames(11, 48, 64)
    arrays = frame_codec.encode_frames(frames, codec, 90)

    def get(name, rows=None):
        return arrays[name] if rows is None else arrays[name][rows]

    count = frame_codec.CODECS[codec].count
    assert len(arrays[count]) == len(frames)
    whole = frame_codec.decode_frames(get, range(len(frames)), codec)
    assert whole.shape == frames.shape and whole.dtype == np.uint8
    rng = np.random.default_rng(0)
    for indices in [[0], [10], [3, 4, 5], [0, 10], *(sorted(rng.choice(11, k, replace=False))
                                                     for k in (2, 4, 7))]:
        assert np.array_equal(frame_codec.decode_frames(get, indices, codec), whole[indices])
    if not frame_codec.CODECS[codec].lossy:
        assert np.array_equal(whole, frames)


def test_the_config_offers_exactly_the_registered_codecs():
    rules = {f.name: f.metadata for f in fields(DataConfig)}
    assert set(rules["store_codec"]["choices"]) == set(frame_codec.CODECS)
    assert DataConfig().store_quality == frame_codec.QUALITY and DataConfig().store_codec == "raw"
    with pytest.raises(ConfigError, match="data.store_codec must be one of raw, jpeg"):
        load_config(None, ["data.store_codec=png"])
    with pytest.raises(ConfigError, match="data.store_quality"):
        load_config(None, ["data.store_quality=101"])


def test_a_jpeg_store_round_trips_within_the_jpeg_error_and_is_smaller(videos, tmp_path):
    raw = StoredFrames(build_clip_store(videos, tmp_path / "raw", RESIZE, "pyav"), videos)
    folder = _jpeg(videos, tmp_path / "jpeg", shard_size=2)
    jpeg = StoredFrames(folder, videos, "jpeg", 90)
    assert shards.Store(folder, clip_store.WHAT).fingerprint["codec"] == "jpeg"
    for v in videos:
        n = raw.num_frames(v)
        assert jpeg.num_frames(v) == n == len(read_all_frames(v))
        expect, got = raw.frames(v, range(n)), jpeg.frames(v, range(n))
        assert got.shape == expect.shape and got.dtype == np.uint8
        assert min(got.shape[1:3]) == RESIZE
        assert np.abs(got.astype(int) - expect).mean() < JPEG_MAE
        # Any frames, in any pattern a clip asks for, are those of the whole video.
        for indices in ([0], [n - 1], [1, 3, 5], [0, n - 1], list(range(2, n, 3))):
            assert np.array_equal(jpeg.frames(v, indices), got[indices])

    def size(f):
        return sum(p.stat().st_size for p in f.glob("shard-*.safetensors"))

    assert size(folder) * 4 < size(raw.folder)


def test_a_raw_store_fingerprint_is_as_before(videos, tmp_path):
    """No codec key for raw: stores built before codecs existed are found and read."""
    folder = build_clip_store(videos[:2], tmp_path, RESIZE, "pyav")
    made = shards.Store(folder, clip_store.WHAT).fingerprint
    assert set(made) == {"resize", "backend", "corpus"}
    # The quality means nothing to raw frames: a raw store fits whatever data.store_quality is.
    assert find_clip_store(tmp_path, videos[:2], RESIZE, "pyav", quality=50) == folder
    assert isinstance(frame_source("store", folder, videos[:2], quality=50), StoredFrames)


def _one_line(make) -> str:
    with pytest.raises(UserError) as info:
        make()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_store_kept_another_way_is_refused_or_not_found(videos, tmp_path):
    folder = _jpeg(videos, tmp_path)
    # Building (store-clips, or a run's preparation) over it with other settings is refused.
    for build, differ in [
            (lambda: build_clip_store(videos, tmp_path, RESIZE, "pyav"), "codec, quality"),
            (lambda: _jpeg(videos, tmp_path, quality=80), "quality"),
            (lambda: clip_store_for(videos, tmp_path, RESIZE, "pyav"), "codec, quality")]:
        message = _one_line(build)
        assert f"differs in: {differ}" in message and "distinit store-clips" in message
    # A run looking for its store finds it only with the same codec and quality.
    assert find_clip_store(tmp_path, videos, RESIZE, "pyav", codec="jpeg") == folder
    assert find_clip_store(tmp_path, videos[1:], RESIZE, "pyav", codec="jpeg") == folder
    assert find_clip_store(tmp_path, videos, RESIZE, "pyav") is None
    assert find_clip_store(tmp_path, videos, RESIZE, "pyav", codec="jpeg", quality=80) is None
    # A reader told the wrong way never reads its bytes as frames.
    assert "keeps its frames as jpeg at quality 90, not raw" in _one_line(
        lambda: StoredFrames(folder, videos))
    assert "not jpeg at quality 80" in _one_line(lambda: StoredFrames(folder, videos, "jpeg", 80))
    raw = build_clip_store(videos, tmp_path / "raw", RESIZE, "pyav")
    assert "keeps its frames as raw, not jpeg at quality 90" in _one_line(
        lambda: StoredFrames(raw, videos, "jpeg"))
    assert "unknown store codec 'png'" in _one_line(
        lambda: build_clip_store(videos, tmp_path / "png", RESIZE, "pyav", codec="png"))


def test_a_damaged_jpeg_shard_is_caught_by_its_checksum_then_rebuilt(videos, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.setattr(check_store, "_verified", {})
    folder = _jpeg(videos, tmp_path, shard_size=2)
    shard = folder / shards.shard_name(1)
    before = shard.read_bytes()
    data = bytearray(before)
    data[-3] ^= 0x10  # one byte of the last array's JPEG bytes or ends: still decodes, wrongly
    shard.write_bytes(bytes(data))
    check_store._verified.clear()  # the next run is a new process
    message = _one_line(lambda: StoredFrames(folder, videos, "jpeg"))
    assert f"at {folder}: shard-00001.safetensors is damaged" in message
    assert "checksum differs" in message
    assert cli.main(["check-store", str(folder)]) == 1
    capsys.readouterr()
    _jpeg(videos, tmp_path, shard_size=2)  # the builder run again
    assert capsys.readouterr().out.count("rebuilding it") == 1
    assert shard.read_bytes() == before  # encoding is deterministic: the very bytes
    assert cli.main(["check-store", str(folder)]) == 0


def test_an_interrupted_jpeg_build_resumes_with_the_missing_shards_only(videos, tmp_path,
                                                                        monkeypatch):
    made = sigterm_on_read(monkeypatch)  # during the first video of shard 1
    with pytest.raises(Interrupted, match="1 of 3 shards of the clip store"):
        _jpeg(videos, tmp_path, shard_size=2)
    folder = clip_store.store_folder(tmp_path, videos)
    kept = (folder / shards.shard_name(0)).stat().st_mtime_ns
    made.clear()
    monkeypatch.setattr(clip_store, "read_all_frames",
                        lambda path, *args: made.append(path) or read_all_frames(path, *args))
    assert _jpeg(videos, tmp_path, shard_size=2) == folder
    assert made == videos[2:]  # the videos of shards 1 and 2, no others
    assert (folder / shards.shard_name(0)).stat().st_mtime_ns == kept
    assert shards.complete(folder)
    assert StoredFrames(folder, videos, "jpeg").frames(videos[4], [0, 9]).shape == (2, 64, 106, 3)


SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=36",
         "data.crop=32", "data.num_workers=0", "data.num_test_clips=2", "optim.batch_size=4",
         "optim.epochs=1", "log_every=1"]


def test_a_run_trains_from_a_jpeg_store(labeled, tmp_path, capsys):
    cache = tmp_path / "cache"
    store = [f"data.cache_dir={cache}", "data.cache=store", "data.store_codec=jpeg",
             "data.store_quality=85"]
    assert cli.main(["finetune", *SMALL, *store, *labeled, f"out_dir={tmp_path / 'ft'}"]) == 0
    assert "decoding" in capsys.readouterr().out  # built by the run's preparation step
    folders = sorted(cache.iterdir())
    assert len(folders) == 2  # the train and the test split, both kept as JPEG
    for f in folders:
        made = json.loads((f / "manifest.json").read_text())["fingerprint"]
        assert (made["codec"], made["quality"]) == ("jpeg", 85)
        store = shards.Store(f, clip_store.WHAT)
        first = store.manifest["videos"][0]
        assert store.has_array(first, "jpeg") and not store.has_array(first, "frames")
    config = load_checkpoint(tmp_path / "ft" / "last.pt")["config"]["data"]
    assert (config["cache"], config["store_codec"]) == ("store", "jpeg")
