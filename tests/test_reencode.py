"""`distinit reencode`: round trips to short-GOP video and to frame folders, resumable."""

from __future__ import annotations

import av
import numpy as np

from distinit.data.video.frame_folders import FPS_FILE
from distinit.data.video.io import list_videos, probe, read_all_frames
from distinit.data.video.reencode import main, output_size


def keyframe_indices(path) -> list[int]:
    with av.open(str(path)) as container:
        return [i for i, frame in enumerate(container.decode(video=0)) if frame.key_frame]


def test_reencode_round_trip_with_short_gop(tmp_path, make_video, make_bad_video, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    inputs = {"sub/a.avi": make_video(name="a", container="avi", num_frames=30, folder=src / "sub"),
              "b.webm": make_video(name="b", container="webm", num_frames=30, gop=30, folder=src)}
    make_bad_video("text", src)

    assert main([str(src), str(out), "--gop", "8", "--workers", "2"]) == 1  # one bad input
    text = capsys.readouterr().out
    assert f"FAILED {src / 'text.mp4'}" in text and "2 written, 0 already done, 1 failed" in text
    assert list_videos(out) == [out / "b.mp4", out / "sub/a.mp4"]  # no temporary files left
    assert not [p for p in out.rglob(".*")]
    for relative, source in inputs.items():
        output = out / relative.replace(".avi", ".mp4").replace(".webm", ".mp4")
        assert probe(output) == probe(source)  # frame count, rate and size kept
        assert np.abs(read_all_frames(output).astype(int) - read_all_frames(source)).mean() < 4
        keys = keyframe_indices(output)
        assert keys[0] == 0 and max(np.diff(keys + [30])) <= 8  # a keyframe every <= 8 frames

    before = (out / "b.mp4").stat().st_mtime_ns
    assert main([str(src), str(out), "--gop", "8", "--workers", "1"]) == 1
    assert "0 written, 2 already done, 1 failed" in capsys.readouterr().out
    assert (out / "b.mp4").stat().st_mtime_ns == before  # skipped, not rewritten


def test_reencode_to_frame_folders_resized(tmp_path, make_video, capsys):
    src, out = tmp_path / "src", tmp_path / "frames"
    video = make_video(name="clip", container="mp4", num_frames=12, fps=30000 / 1001, folder=src)
    listing = tmp_path / "list.txt"
    listing.write_text("src/clip.mp4\n")
    assert main([str(listing), str(out), "--frames", "--short-side", "24", "--workers", "1"]) == 0
    folder = out / "clip"
    assert sorted(p.name for p in folder.iterdir())[:2] == ["000000.jpg", "000001.jpg"]
    info = probe(folder)
    assert (info.num_frames, info.height, info.width) == (12, 24, 32)
    assert info.fps == probe(video).fps == float((folder / FPS_FILE).read_text())
    assert read_all_frames(folder).shape == (12, 24, 32, 3)
    assert "1 written" in capsys.readouterr().out


def test_reencode_odd_sizes_and_other_codecs(tmp_path, make_video):
    assert output_size(48, 64, None) == (48, 64)
    assert output_size(240, 320, 128) == (128, 170)
    assert output_size(37, 51, None) == (36, 50)  # 4:2:0 needs even sizes
    assert output_size(37, 51, None, even=False) == (37, 51)
    src = make_video(name="v", container="mp4", num_frames=10, height=48, width=64,
                     folder=tmp_path / "src")
    assert main([str(src.parent), str(tmp_path / "out"), "--codec", "mjpeg", "--short-side", "30",
                 "--workers", "1"]) == 0
    info = probe(tmp_path / "out" / "v.avi")
    assert (info.num_frames, info.height, info.width) == (10, 30, 40)


def test_reencoding_a_folder_into_itself_is_refused_and_touches_nothing(tmp_path, make_video,
                                                                        capsys):
    """Into itself every output "already exists" (0 written, N already done); into a subfolder
    the next listing of the source would take the outputs for videos of the data set."""
    from distinit.cli import main as cli

    src = tmp_path / "src"
    make_video(name="a", num_frames=8, folder=src)
    before = sorted(p.name for p in src.rglob("*"))
    for out in (src, src / "gop16"):
        capsys.readouterr()
        assert cli(["reencode", str(src), str(out)]) == 2
        err = capsys.readouterr().err
        assert err.splitlines() == [f"distinit reencode: error: {out} is the source folder {src} "
                                    "or inside it; write the re-encoded videos to a folder "
                                    "outside it"]
    assert sorted(p.name for p in src.rglob("*")) == before


def test_keep_names_writes_the_names_the_split_files_list(tmp_path, make_video, capsys):
    """HMDB-51 and UCF-101 split files name `.avi` files: with --keep-names the re-encoded
    videos keep them (H.264 in AVI), so the official splits read the re-encoded folder."""
    from distinit.data.labels.splits import load_hmdb51

    src, out, splits = tmp_path / "src", tmp_path / "out", tmp_path / "splits"
    for name in ("a", "b"):
        make_video(name=name, container="avi", num_frames=20, folder=src / "wave")
    splits.mkdir()
    (splits / "wave_test_split1.txt").write_bytes(b"a.avi 1 \r\nb.avi 2 \r\n")
    assert main([str(src), str(out), "--gop", "4", "--keep-names", "--workers", "1"]) == 0
    assert sorted(p.name for p in (out / "wave").iterdir()) == ["a.avi", "b.avi"]
    keys = keyframe_indices(out / "wave" / "b.avi")
    assert keys[0] == 0 and max(np.diff(keys + [20])) <= 4
    assert probe(out / "wave" / "a.avi") == probe(src / "wave" / "a.avi")
    test = load_hmdb51(out, splits, 1, "test")
    assert [v.name for v, _ in test.samples] == ["b.avi"]
    assert read_all_frames(test.samples[0][0]).shape[0] == 20


def test_keep_names_refuses_a_container_that_cannot_hold_the_codec(tmp_path, make_video,
                                                                     capsys):
    from distinit.cli import main as cli

    make_video(name="v", container="webm", num_frames=8, folder=tmp_path / "src")
    capsys.readouterr()
    assert cli(["reencode", str(tmp_path / "src"), str(tmp_path / "out"), "--keep-names"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distinit reencode: error: --keep-names keeps the .webm files' "
                          "container, which cannot hold libx264") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
