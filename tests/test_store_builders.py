"""Sharded stores under two builders and signals: a second builder is refused or waits, a killed
builder's temporary files are removed by the next, SIGTERM and Ctrl-C stop with one line and
the build resumes (`distinit.data.stores.shards`, `distinit.engine.lock`)."""

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from store_case import cache_args, hold_lock, make_videos, one_error

from distinit import cli
from distinit.data.stores import clip_store, shards
from distinit.data.stores.clip_store import build_clip_store, clip_store_for, store_folder
from distinit.data.video.io import list_videos, read_all_frames
from distinit.engine.interrupt import Interrupted
from distinit.targets import cache


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    return make_videos(tmp_path_factory)


# ---- one builder per store --------------------------------------------------------------------

def test_a_second_builder_is_refused_and_a_run_waits_for_the_first(world, videos, tmp_path,
                                                                   capsys):
    cache_dir = tmp_path / "cache"
    corpus = list_videos(world.corpus_dir)
    holder = hold_lock(store_folder(cache_dir, corpus), 60)
    try:
        assert cli.main(["store-clips", f"data.videos={world.corpus_dir}",
                         f"data.cache_dir={cache_dir}", "data.resize=36"]) == 2
        line = one_error(capsys, "store-clips")
        assert f"is in use: pid {holder.pid} on {socket.gethostname()}" in line
        assert "`distinit store-clips other.yaml`" in line
        assert "set data.cache_dir to another folder" in line
        assert [p.name for p in store_folder(cache_dir, corpus).iterdir()] == [".distinit.lock"]
    finally:
        holder.kill()
        holder.wait()
    # A run's preparation step waits for the builder, then builds (or uses) the store.
    holder = hold_lock(store_folder(cache_dir, videos), 1.0)
    start = time.monotonic()
    folder = clip_store_for(videos, cache_dir, 36, "pyav")
    assert time.monotonic() - start >= 0.5 and holder.wait() == 0
    assert f"waiting for pid {holder.pid}" in capsys.readouterr().err
    assert shards.complete(folder)


def test_a_killed_builders_temporary_files_are_removed_by_the_next(videos, tmp_path):
    folder = build_clip_store(videos, tmp_path, 36, "pyav", shard_size=2)
    (folder / "shard-00002.safetensors").unlink()
    stale = [".shard-00002.safetensors.k3j9x_1.tmp", ".shard-00002.safetensors.sum.a8.tmp",
             ".shard-00001.q1w2e3.tmp", ".manifest.json.zz9.tmp", ".tmpAb12Cd"]
    for name in [*stale, ".notes", "notes.tmp"]:
        (folder / name).write_bytes(b"x" * 100)
    build_clip_store(videos, tmp_path, 36, "pyav", shard_size=2)
    names = {p.name for p in folder.iterdir()}
    assert not names & set(stale) and {".notes", "notes.tmp", ".distinit.lock"} <= names


# ---- signals ----------------------------------------------------------------------------------

def sigterm_on_read(monkeypatch, nth: int = 3) -> list:
    """Make the clip store's decoder send this process SIGTERM while it reads its `nth` video
    (with shards of 2, the first video of shard 1); returns the list of videos it reads."""
    made = []

    def read(path, *args):
        made.append(path)
        if len(made) == nth:
            os.kill(os.getpid(), signal.SIGTERM)
        return read_all_frames(path, *args)

    monkeypatch.setattr(clip_store, "read_all_frames", read)
    return made


def test_sigterm_stops_between_videos_saying_what_is_kept_and_the_build_resumes(
        videos, tmp_path, monkeypatch):
    made = sigterm_on_read(monkeypatch)
    with pytest.raises(Interrupted) as info:
        build_clip_store(videos, tmp_path, 36, "pyav", shard_size=2)
    folder = store_folder(tmp_path, videos)
    assert info.value.exit_code == 143 and str(info.value) == (
        f"stopped by SIGTERM: 1 of 3 shards of the clip store at {folder} are written and kept; "
        "run the same command again to finish it")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is undone
    kept = (folder / "shard-00000.safetensors").stat().st_mtime_ns
    made.clear()
    monkeypatch.setattr(clip_store, "read_all_frames", read_all_frames)
    build_clip_store(videos, tmp_path, 36, "pyav", shard_size=2)
    assert (folder / "shard-00000.safetensors").stat().st_mtime_ns == kept
    assert shards.complete(folder)


def test_ctrl_c_stops_cache_targets_with_one_line_and_exit_130(world, teacher_file, tmp_path,
                                                               capsys, monkeypatch):
    real, made = cache.video_targets, []

    def targets(video, *args, **kwargs):
        made.append(video)
        if len(made) == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real(video, *args, **kwargs)

    monkeypatch.setattr(cache, "video_targets", targets)
    folder = tmp_path / "cache"
    args = cache_args(world, teacher_file, folder, "distill.cache_shard_size=2")
    assert cli.main(["cache-targets", *args]) == 130
    assert one_error(capsys, "cache-targets") == (
        f"distinit cache-targets: error: stopped by SIGINT: 2 of 6 shards of the teacher-target "
        f"cache at {folder} are written and kept; run the same command again to finish it")
    monkeypatch.setattr(cache, "video_targets", real)
    assert cli.main(["cache-targets", *args]) == 0
    assert shards.complete(folder)
