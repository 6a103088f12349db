"""`distinit check-videos` on folders and lists mixing good and bad videos."""

from __future__ import annotations

import pytest

from distinit.data.video.check import check_video, main
from distinit.errors import UserError


def test_check_videos_lists_every_bad_file_and_exits_1(tmp_path, make_video, make_bad_video,
                                                        capsys):
    root = tmp_path / "videos"
    good = [make_video(name="h264", container="mp4", folder=root / "a"),
            make_video(name="vp9", container="webm", folder=root / "b"),
            make_video(name="clip", container="frames", num_frames=3, folder=root / "c")]
    bad = [make_bad_video(kind, root / "bad")
           for kind in ["empty", "text", "audio_only", "zero_frames"]]
    whole = make_video(name="long", container="avi", num_frames=30, folder=tmp_path)
    truncated = root / "bad" / "truncated.avi"  # decodes, but not up to its last frame
    truncated.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    bad.append(truncated)

    assert main([str(root), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    for path in bad:
        assert f"BAD {path}: " in out
    assert "past the last decodable frame" in out and "no video stream" in out
    for path in good:
        assert str(path) not in out
    assert "checked 8 videos: 3 ok, 5 bad" in out


def test_check_videos_exits_0_when_all_decode(tmp_path, make_video, capsys):
    videos = [make_video(name=f"v{i}", container=c) for i, c in enumerate(["mp4", "avi"])]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(p.name for p in videos) + "\n")
    assert main([str(listing), "--workers", "1", "--full"]) == 0
    assert "checked 2 videos: 2 ok, 0 bad" in capsys.readouterr().out


def test_check_video_reason(make_video, make_bad_video):
    assert check_video(make_video(container="mkv")) is None
    assert check_video(make_bad_video("empty")) == "file is empty (0 bytes)"


def test_check_videos_extension_filter_and_errors(tmp_path, make_video, make_bad_video,
                                                   capsys):
    make_video(container="mp4")
    make_bad_video("text").rename(tmp_path / "bad.avi")
    assert main([str(tmp_path), "--ext", "mp4", "--workers", "1"]) == 0  # bad.avi not looked at
    assert "checked 1 videos" in capsys.readouterr().out
    with pytest.raises(UserError, match="invalid choice: 'nope'"):  # an unknown backend
        main([str(tmp_path), "--backend", "nope"])


def test_check_videos_on_one_video_file(make_video, make_bad_video, capsys):
    assert main([str(make_video(container="mp4")), "--workers", "1"]) == 0
    assert "checked 1 videos: 1 ok, 0 bad" in capsys.readouterr().out
    bad = make_bad_video("text")  # text.mp4: a video by its name, read as one, not as a list
    assert main([str(bad), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert f"BAD {bad}: " in out and "checked 1 videos: 0 ok, 1 bad" in out


def test_check_videos_suggests_its_own_option(tmp_path):
    with pytest.raises(UserError, match="no videos .* with --ext$"):
        main([str(tmp_path), "--workers", "1"])
