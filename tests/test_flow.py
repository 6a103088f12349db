"""`distinit flow` on real encoded videos: motion, storage format, resuming, bad inputs; RAFT
with weights the tests make (torchvision's raft_small, untrained) and stand-in models."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from distinit import cli
from distinit.data.flow import store as flow_store
from distinit.data.flow.compute import dequantize, flow_file, main, read_flow_meta, video_flow
from distinit.data.flow.raft import MIN_SIDE, raft_flow, weights_digest
from distinit.data.flow.store import flow_meta, quantize
from distinit.data.video.io import probe, read_all_frames, write_video
from distinit.errors import UserError
from distinit.optional import import_torchvision

SPEED, SQUARE, T = 2, 24, 10  # the square moves SPEED px a frame to the right


def square_frames(num_frames: int = T, height: int = 64, width: int = 96) -> np.ndarray:
    """(T, H, W, 3): a blocky high-contrast square moving right over a faint still texture."""
    rng = np.random.default_rng(0)
    background = 100 + rng.integers(0, 24, (height // 8, width // 8), np.uint8)
    background = background.repeat(8, 0).repeat(8, 1)
    square = rng.choice(np.array([30, 230], np.uint8), (SQUARE // 4, SQUARE // 4))
    square = square.repeat(4, 0).repeat(4, 1)
    frames = np.repeat(background[None, :, :, None], num_frames, 0).repeat(3, 3)
    for t in range(num_frames):
        x = 8 + SPEED * t
        frames[t, 20:20 + SQUARE, x:x + SQUARE] = square[:, :, None]
    return frames


def write(path, frames=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, square_frames() if frames is None else frames, fps=25,
                options={"crf": "12"})
    return path


def run(*args) -> int:
    return main([str(a) for a in args] + ["--workers", "1"])


def _has_contrib() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2, "optflow")


@pytest.mark.parametrize("algorithm", [
    "dis", "farneback",
    pytest.param("tvl1", marks=pytest.mark.skipif(not _has_contrib(), reason="no opencv-contrib"))])
def test_translating_square_has_flow_of_its_speed_and_direction(tmp_path, algorithm):
    video = write(tmp_path / "src" / "square.mp4")
    assert run(tmp_path / "src", tmp_path / "out", "--algorithm", algorithm, "--dtype",
               "float16") == 0
    stored = np.load(tmp_path / "out" / "square.npy", mmap_mode="r")
    flow = dequantize(stored, read_flow_meta(tmp_path / "out"))  # (T, H, W, 2) pixels
    for t in range(T - 1):
        x = 8 + SPEED * t
        inside = flow[t, 24:20 + SQUARE - 4, x + 4:x + SQUARE - 4]  # away from the edges
        assert np.median(inside[..., 0]) == pytest.approx(SPEED, abs=0.3)
        assert np.median(inside[..., 1]) == pytest.approx(0, abs=0.3)
    assert np.abs(np.median(flow[:, 50:, :, 0])) < 0.2  # the background below stands still
    assert flow.shape == (probe(video).num_frames, 64, 96, 2)


def test_uint8_quantisation_round_trips_within_a_step():
    meta = flow_meta("dis", "uint8", bound=20.0, short_side=0)
    v = np.linspace(-30, 30, 2001, dtype=np.float32)
    q = quantize(v, meta)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, np.rint((np.clip(v, -20, 20) + 20) * 255 / 40))
    step = 40 / 255
    assert np.abs(dequantize(q, meta) - np.clip(v, -20, 20)).max() <= step / 2 + 1e-5
    assert dequantize(np.array([0, 255], np.uint8), meta).tolist() == pytest.approx([-20, 20])
    half = flow_meta("dis", "float16", bound=20.0, short_side=0)
    assert half["bound"] is None and quantize(v, half).dtype == np.float16
    np.testing.assert_allclose(dequantize(quantize(v, half), half), v, rtol=1e-3)


def test_layout_shapes_and_flow_json(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write(src / "a" / "deep.mp4")
    write(src / "one.mp4", square_frames(1))
    assert run(src, out, "--short-side", "32") == 0
    meta = json.loads((out / "flow.json").read_text())
    assert meta == {"format": "distinit-flow", "version": 1, "algorithm": "dis",
                    "dtype": "uint8", "bound": 20.0, "short_side": 32}
    assert read_flow_meta(out) == meta
    deep = np.load(out / "a" / "deep.npy")
    assert deep.shape == (T, 32, 48, 2) and deep.dtype == np.uint8  # resized, aspect kept
    np.testing.assert_array_equal(deep[-1], deep[-2])  # the last frame repeats the one before
    # Flow in pixels of the resized frames: half the native speed.
    assert np.median(dequantize(deep[:-1, 12:20, 10:22, 0], meta)) == pytest.approx(SPEED / 2,
                                                                                    abs=0.3)
    one = np.load(out / "one.npy")
    assert one.shape == (1, 32, 48, 2)
    assert np.abs(dequantize(one, meta)).max() <= 20 / 255 + 1e-6  # zero flow, within half a step


def test_flow_file_paths(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "frames.v1").mkdir(parents=True)
    assert flow_file(src / "a" / "b.c.mp4", src, out) == out / "a" / "b.c.npy"
    assert flow_file(src / "frames.v1", src, out) == out / "frames.v1.npy"  # a frame folder
    listing = src / "list.txt"
    assert flow_file(src / "a" / "x.avi", listing, out) == out / "a" / "x.npy"
    assert flow_file(tmp_path / "elsewhere" / "y.mp4", listing, out) == out / "y.npy"


def test_list_file_source(tmp_path):
    write(tmp_path / "data" / "sub" / "x.mp4")
    write(tmp_path / "other" / "y.mp4")
    listing = tmp_path / "data" / "list.txt"
    listing.write_text("sub/x.mp4\n../other/y.mp4\n")
    assert run(listing, tmp_path / "out", "--short-side", "16") == 0
    assert sorted(p.relative_to(tmp_path / "out").as_posix()
                  for p in (tmp_path / "out").rglob("*.npy")) == ["sub/x.npy", "y.npy"]


def test_resume_skips_finished_files_and_redoes_broken_ones(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    for name in ("a", "b", "c"):
        write(src / f"{name}.mp4")
    assert run(src, out, "--short-side", "16") == 0
    assert capsys.readouterr().out.startswith("3 written, 0 skipped (already done), 0 failed")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "c.npy").write_bytes((out / "c.npy").read_bytes()[:200])  # cut short in its data

    assert run(src, out, "--short-side", "16") == 0
    assert capsys.readouterr().out.startswith("1 written, 2 skipped (already done), 0 failed")
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert after["a.npy"] == before["a.npy"] and after["b.npy"] == before["b.npy"]
    assert after["flow.json"] == before["flow.json"]
    assert np.load(out / "c.npy").shape == (T, 16, 24, 2)
    assert sorted(after) == [".distinit.lock", "a.npy", "b.npy", "c.npy", "flow.json"]  # no tmp


def test_bad_video_is_reported_and_skipped(tmp_path, capsys, make_bad_video):
    src, out = tmp_path / "src", tmp_path / "out"
    write(src / "good.mp4")
    bad = make_bad_video("random_bytes", src)
    assert cli.main(["flow", str(src), str(out), "--short-side", "16", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: skipping video {bad}: ")
    assert "1 written, 0 skipped (already done), 1 failed" in captured.out
    assert sorted(p.name for p in out.iterdir()) == [".distinit.lock", "flow.json", "good.npy"]


def test_all_videos_bad_exits_1_with_one_line(tmp_path, capsys, make_bad_video):
    src = tmp_path / "src"
    make_bad_video("random_bytes", src)
    make_bad_video("text", src)
    assert cli.main(["flow", str(src), str(tmp_path / "out"), "--workers", "1"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines()
              if not line.startswith("warning:")]
    assert errors == ["distinit flow: error: all 2 videos failed (see the warnings above); "
                      "nothing was written"]


def test_other_settings_into_the_same_out_are_refused(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    write(src / "a.mp4")
    assert run(src, out, "--short-side", "16") == 0
    capsys.readouterr()
    assert cli.main(["flow", str(src), str(out), "--short-side", "16", "--algorithm",
                     "farneback", "--bound", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "algorithm=dis, bound=20.0 (this run: algorithm=farneback, " \
        "bound=10.0)" in err and "choose another OUT" in err
    with pytest.raises(UserError, match="not found"):
        read_flow_meta(src)
    (out / "flow.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        read_flow_meta(out)


def test_tvl1_without_opencv_contrib_is_one_line(tmp_path, capsys, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    if hasattr(cv2, "optflow"):  # opencv-contrib installed: hide it, as plain OpenCV lacks it
        monkeypatch.delattr(cv2, "optflow")
    write(tmp_path / "src" / "a.mp4")
    assert cli.main(["flow", str(tmp_path / "src"), str(tmp_path / "out"), "--algorithm",
                     "tvl1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install opencv-contrib-python-headless" in err
    assert not (tmp_path / "out").exists()


def test_missing_opencv_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(UserError, match=r"pip install -e '\.\[opencv\]'"):
        video_flow(square_frames(2), flow_meta("dis", "uint8", 20.0, 0))


def test_parallel_workers_through_the_cli(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    for name in ("a", "b", "c"):
        write(src / f"{name}.mp4")
    assert cli.main(["flow", str(src), str(out), "--workers", "2", "--short-side", "16"]) == 0
    assert "3 written" in capsys.readouterr().out
    meta = read_flow_meta(out)
    # The same numbers as computed in this process: workers change only where the work runs.
    frames = read_all_frames(src / "b.mp4")
    np.testing.assert_array_equal(np.load(out / "b.npy"), video_flow(frames, meta))
    assert sorted(p.name for p in out.iterdir()) == [".distinit.lock", "a.npy", "b.npy", "c.npy",
                                                     "flow.json"]


def test_unreadable_output_is_not_complete(tmp_path):
    path = tmp_path / "x.npy"
    assert not flow_store.is_complete(path)
    np.save(path, np.zeros((2, 4, 4, 3), np.uint8))  # not flow: 3 channels
    assert not flow_store.is_complete(path)
    np.save(path, np.zeros((2, 4, 4, 2), np.uint8))
    assert flow_store.is_complete(path)


# RAFT (torchvision), with weights made here: untrained, so only the plumbing is checked.


@pytest.fixture(scope="module")
def raft_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("raft") / "raft_small.pth"
    torch.manual_seed(0)
    torch.save(import_torchvision().models.optical_flow.raft_small().state_dict(), path)
    return path


def test_raft_writes_a_flow_folder_the_readers_read(tmp_path, raft_weights):
    src, out = tmp_path / "src", tmp_path / "out"
    write(src / "a.mp4")
    write(src / "b.mp4", square_frames(3, 48, 56))
    assert cli.main(["flow", str(src), str(out), "--method", "raft_small", "--weights",
                     str(raft_weights), "--iters", "2", "--device", "cpu", "--workers", "2"]) == 0
    meta = read_flow_meta(out)
    assert meta["algorithm"] == "raft_small" and meta["iters"] == 2
    assert meta["weights"] == str(raft_weights)
    assert meta["weights_sha256"] == weights_digest(raft_weights)
    a, b = np.load(out / "a.npy"), np.load(out / "b.npy")
    assert a.shape == (T, 64, 96, 2) and a.dtype == np.uint8 and b.shape == (3, 48, 56, 2)
    flow = dequantize(a, meta)  # (T, H, W, 2) pixels
    assert np.isfinite(flow).all() and np.abs(flow).max() <= 20
    # Workers (one torch thread each) compute what this process computes.
    np.testing.assert_allclose(flow, dequantize(video_flow(read_all_frames(src / "a.mp4"), meta),
                                                meta), atol=2 * 20 / 255)


class Difference(nn.Module):
    """A stand-in for RAFT whose "flow" is channels 0-1 of image2 - image1: where each pixel
    ends up after the padding and cropping shows in the output."""

    def forward(self, a, b, num_flow_updates):
        H, W = a.shape[-2:]
        assert H % 8 == 0 and W % 8 == 0 and min(H, W) >= MIN_SIDE and num_flow_updates == 3
        return [(b - a)[:, :2]]


class Constant(nn.Module):
    """A stand-in for RAFT that moves every pixel (3, 5) px of the frames it is given."""

    def forward(self, a, b, num_flow_updates):
        assert min(a.shape[-2:]) >= MIN_SIDE
        return [a.new_tensor([3.0, 5.0]).view(1, 2, 1, 1).expand(len(a), 2, *a.shape[-2:])]


def test_raft_pads_to_a_multiple_of_8_and_crops_back():
    frames = np.random.default_rng(0).integers(0, 256, (11, 130, 141, 3), np.uint8)
    flow = raft_flow(Difference(), frames, iters=3)  # 10 pairs: two batches
    expected = (frames[1:, ..., :2].astype(np.float32) - frames[:-1, ..., :2]) / 127.5
    assert flow.shape == (10, 130, 141, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(flow, expected, atol=1e-5)


def test_raft_enlarges_small_frames_and_scales_their_flow_back():
    frames = np.zeros((3, 36, 52, 3), np.uint8)
    flow = raft_flow(Constant(), frames, iters=1)
    # enlarged to (128, 192): 36 * 128 / 36 and 52 * 128 / 36 = 184.9, rounded up to 8s
    assert flow.shape == (2, 36, 52, 2)
    np.testing.assert_allclose(flow[..., 0], 3 * 52 / 192, rtol=1e-5)
    np.testing.assert_allclose(flow[..., 1], 5 * 36 / 128, rtol=1e-5)


def test_raft_bad_weights_are_one_line(tmp_path, capsys, raft_weights):
    src = tmp_path / "src"
    write(src / "a.mp4", square_frames(2))

    def error(*args) -> str:
        assert cli.main(["flow", str(src), str(tmp_path / "out"), *map(str, args)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err
        return err

    assert "needs --weights FILE" in error("--method", "raft_small")
    assert "RAFT weights not found" in error("--method", "raft_large", "--weights",
                                             tmp_path / "missing.pth")
    assert "does not match torchvision's raft_large" in error("--method", "raft_large",
                                                            "--weights", raft_weights)
    assert "--weights and --iters are for" in error("--weights", raft_weights)
    assert not (tmp_path / "out").exists()


def test_raft_settings_are_part_of_the_folder(tmp_path, capsys, raft_weights):
    src, out = tmp_path / "src", tmp_path / "out"
    write(src / "a.mp4", square_frames(2))
    args = ["flow", str(src), str(out), "--method", "raft_small", "--weights", str(raft_weights),
            "--device", "cpu"]
    assert cli.main([*args, "--iters", "1"]) == 0
    capsys.readouterr()
    assert cli.main([*args, "--iters", "2"]) == 2
    assert "iters=1 (this run: iters=2)" in capsys.readouterr().err


def test_torchrun_ranks_share_the_videos_and_write_what_one_process_writes(tmp_path):
    """Two torchrun processes (one node here; the same split across nodes): each video's flow is
    computed once, by rank (index mod 2), and the folder equals a single process's."""
    import os
    import subprocess

    src = tmp_path / "src"
    for name in ("a", "b", "c", "d", "e"):
        write(src / f"{name}.mp4")
    assert run(src, tmp_path / "one", "--short-side", "16", "--workers", "1") == 0
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "distinit.cli", "flow", str(src), str(tmp_path / "two"), "--short-side", "16",
         "--workers", "1"], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "rank 0 of 2: 3 written" in proc.stdout and "rank 1 of 2: 2 written" in proc.stdout
    one = sorted((tmp_path / "one").rglob("*.npy"))
    two = sorted((tmp_path / "two").rglob("*.npy"))
    assert [p.name for p in one] == [p.name for p in two] == [f"{n}.npy" for n in "abcde"]
    assert all(np.array_equal(np.load(a), np.load(b)) for a, b in zip(one, two, strict=True))
    assert read_flow_meta(tmp_path / "one") == read_flow_meta(tmp_path / "two")


def test_a_frame_gap_gives_flow_from_t_to_t_plus_gap(tmp_path, capsys):
    """`--gap 3`: the square moves 3 x SPEED px from frame t to t + 3; the last 3 rows repeat
    the last pair's flow; flow.json records the gap, and gap 1 folders keep their old form."""
    src = tmp_path / "src"
    write(src / "square.mp4")
    assert run(src, tmp_path / "out", "--gap", "3", "--dtype", "float16") == 0
    meta = read_flow_meta(tmp_path / "out")
    assert meta["gap"] == 3 and "gap" not in flow_meta("dis", "uint8", 20.0, 0)
    flow = dequantize(np.load(tmp_path / "out" / "square.npy"), meta)
    for t in range(T - 3):
        x = 8 + SPEED * t
        inside = flow[t, 24:20 + SQUARE - 4, x + 4:x + SQUARE - 4]
        assert np.median(inside[..., 0]) == pytest.approx(3 * SPEED, abs=0.5)
    np.testing.assert_array_equal(flow[T - 3:], np.repeat(flow[T - 4:T - 3], 3, 0))
    short = video_flow(square_frames(3), meta)  # no pair 3 frames apart: zero flow
    assert short.shape == (3, 64, 96, 2) and not np.abs(short.astype(np.float32)).any()
    capsys.readouterr()
    assert cli.main(["flow", str(src), str(tmp_path / "out"), "--dtype", "float16"]) == 2
    assert "gap=3 (this run: gap=None)" in capsys.readouterr().err
    assert cli.main(["flow", str(src), str(tmp_path / "o2"), "--gap", "0"]) == 2
    assert "--gap must be >= 1" in capsys.readouterr().err


def test_raft_pairs_frames_a_gap_apart():
    frames = np.random.default_rng(0).integers(0, 256, (12, 130, 141, 3), np.uint8)
    flow = raft_flow(Difference(), frames, iters=3, gap=3)  # 9 pairs: two batches
    expected = (frames[3:, ..., :2].astype(np.float32) - frames[:-3, ..., :2]) / 127.5
    assert flow.shape == (9, 130, 141, 2)
    np.testing.assert_allclose(flow, expected, atol=1e-5)
