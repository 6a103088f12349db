"""Frame sources (decoder, caches, clip store) and the one place bad videos are replaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import pattern_frames

from distinit.data.stores.clip_store import build_clip_store
from distinit.data.video.frames import (
    BadVideos,
    Decoder,
    DiskCache,
    MemoryCache,
    NoReadableVideosError,
    StoredFrames,
    frame_source,
)
from distinit.data.video.io import VideoDecodeError, read_frames, write_video
from distinit.errors import UserError


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("videos")
    out = []
    for i, num_frames in enumerate([12, 5]):
        out.append(root / f"v{i}.mp4")
        write_video(out[-1], pattern_frames(num_frames, 32, 40), fps=10, gop=4)
    return out


def test_every_source_gives_the_decoded_frames(videos, tmp_path):
    store = build_clip_store(videos, tmp_path / "store", 0, "pyav")  # 0: frames as decoded
    sources = [Decoder(), MemoryCache(Decoder()), DiskCache(tmp_path / "disk", Decoder()),
               StoredFrames(store, videos)]
    for video, num_frames in zip(videos, [12, 5]):
        expect = read_frames(video, [1, 3, 4])
        for source in sources:
            assert source.num_frames(video) == num_frames
            got = source.frames(video, [1, 3, 4])
            assert got.shape == (3, 32, 40, 3) and got.dtype == np.uint8
            np.testing.assert_array_equal(got, expect)
    assert len(list((tmp_path / "disk").glob("*.npy"))) == 2  # written on first use


def test_frame_source_names_the_cache_modes(tmp_path, videos):
    assert isinstance(frame_source(), Decoder)
    assert isinstance(frame_source("memory"), MemoryCache)
    disk = frame_source("disk", tmp_path / "c")
    assert isinstance(disk, DiskCache) and not (tmp_path / "c").exists()  # nothing made yet
    with pytest.raises(UserError, match="unknown cache mode 'ram'"):
        frame_source("ram")
    with pytest.raises(UserError, match="set cache_dir"):
        frame_source("disk")


def test_a_bad_video_is_replaced_by_the_next_and_reported_once_per_file(tmp_path, capsys):
    videos = [tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"]
    bad = BadVideos(videos)
    tried = []

    def load(i: int) -> str:
        tried.append(i)
        if i in (0, 1):
            raise VideoDecodeError(videos[i], f"broken {i}")
        return f"clip of {i}"

    assert bad.first_good(0, load) == (2, "clip of 2")
    assert bad.first_good(1, load) == (2, "clip of 2")  # known bad: skipped, not tried again
    assert bad.first_good(2, load) == (2, "clip of 2")
    assert tried == [0, 1, 2, 2, 2]
    bad.mark(1, "broken again")  # found again (e.g. by another worker): not printed again
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: skipping video {videos[0]}: broken 0",
                   f"warning: skipping video {videos[1]}: broken 1"]
    assert bad.report() == (f"2 of 3 videos skipped: {videos[0]} (broken 0), "
                            f"{videos[1]} (broken again)")
    assert BadVideos(videos).report() == ""


def test_bad_videos_wrap_around_and_fail_in_one_line_when_none_loads(tmp_path, capsys):
    videos = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    bad = BadVideos(videos)
    assert bad.first_good(1, lambda i: i if i == 0 else Decoder().num_frames(videos[i])) == (0, 0)
    with pytest.raises(NoReadableVideosError) as info:
        bad.first_good(0, lambda i: Decoder().num_frames(videos[i]))
    message = str(info.value)
    assert "\n" not in message and message.startswith("none of the 2 videos could be decoded")
    assert "file not found" in message
    assert capsys.readouterr().err.count("warning: skipping video") == 2
