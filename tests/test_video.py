"""The decoding layer on real encoded files: every codec, every available backend, bad files."""

from __future__ import annotations

import codecs
import os
import pickle

import av
import numpy as np
import pytest

from distinit.data.video import decoders
from distinit.data.video.frame_folders import DEFAULT_FOLDER_FPS, FPS_FILE
from distinit.data.video.io import (
    BACKENDS,
    VideoDecodeError,
    VideoInfo,
    is_frame_folder,
    iter_frames,
    list_videos,
    probe,
    read_all_frames,
    read_frames,
)
from distinit.errors import UserError

# H.264 in mp4/mkv/ts (ts starts at a non-zero timestamp), MJPEG and MPEG-4 avi, VP9 webm.
CODECS = [("mp4", "libx264"), ("avi", "mjpeg"), ("webm", "libvpx-vp9"), ("avi", "mpeg4"),
          ("mkv", "libx264"), ("ts", "libx264")]
T = 30
BAD_KINDS = ["empty", "truncated_mp4", "random_bytes", "text", "audio_only", "zero_frames",
             "missing"]


def require_backend(backend: str) -> None:
    """Skip when an optional backend does not import here."""
    if backend == "torchcodec":
        try:
            from torchcodec.decoders import VideoDecoder  # noqa: F401
        except (ImportError, RuntimeError, OSError) as e:
            pytest.skip(f"torchcodec is not importable: {str(e).splitlines()[0]}")
    elif backend == "decord":
        pytest.importorskip("decord", reason="decord is not installed")


@pytest.mark.parametrize("container,codec", CODECS)
def test_pyav_decodes_every_frame_in_order(make_video, video_frames, container, codec):
    path = make_video(container=container, codec=codec, num_frames=T, gop=8)
    frames = read_all_frames(path)
    assert frames.shape == (T, 48, 64, 3) and frames.dtype == np.uint8
    # Each decoded frame is closest to the source frame with the same index.
    source = video_frames(T).astype(np.float32)
    distance = ((frames[:, None].astype(np.float32) - source[None]) ** 2).mean(axis=(2, 3, 4))
    np.testing.assert_array_equal(distance.argmin(axis=1), np.arange(T))
    np.testing.assert_array_equal(np.stack(list(iter_frames(path))), frames)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("container,codec", CODECS)
def test_read_frames_equals_sequential_decoding(make_video, container, codec, backend):
    require_backend(backend)
    if container == "ts" and backend != "pyav":
        pytest.skip("decord and torchcodec 0.13 mis-seek or fail in tiny MPEG-TS files")
    path = make_video(container=container, codec=codec, num_frames=T, gop=8)
    assert probe(path, backend) == VideoInfo(num_frames=T, fps=25.0, height=48, width=64)
    sequential = read_all_frames(path, backend)
    assert sequential.shape == (T, 48, 64, 3)
    rng = np.random.default_rng(0)
    index_sets = [[0], [T - 1], [T - 1, 0], [5, 5, 5], [12, 3, 27, 3], [17, 18, 19],
                  [T, T + 15, 2]]  # past the end: clamped to the last frame
    index_sets += [list(rng.integers(0, T, size=rng.integers(1, 9))) for _ in range(12)]
    for indices in index_sets:
        frames = read_frames(path, indices, backend)
        np.testing.assert_array_equal(frames, sequential[np.minimum(indices, T - 1)],
                                      err_msg=f"indices {indices}")
    if backend != "pyav":  # the same FFmpeg decoders underneath: same pixels as PyAV
        assert np.abs(sequential.astype(int) - read_all_frames(path).astype(int)).mean() < 1.0


class _CountingContainer:
    """Wraps a PyAV container to count the packets demuxed and decoded."""

    def __init__(self, container, log: dict[str, list[int]]):
        self.container, self.log = container, log

    def __getattr__(self, name):
        return getattr(self.container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.container.close()

    def demux(self, stream):
        for packet in self.container.demux(stream):
            if packet.size:
                self.log["demuxed"].append(packet.pts)
            yield _CountingPacket(packet, self.log)


class _CountingPacket:
    def __init__(self, packet, log):
        self.packet, self.log = packet, log
        self.size, self.pts = packet.size, packet.pts

    def decode(self):
        if self.size:
            self.log["decoded"].append(self.pts)
        return self.packet.decode()


@pytest.mark.parametrize("container,gop,max_decoded", [("mp4", 8, 14), ("avi", None, 2)])
def test_read_frames_seeks_to_a_keyframe_and_decodes_only_what_it_needs(
        make_video, monkeypatch, container, gop, max_decoded):
    path = make_video(container=container, num_frames=40, gop=gop)
    log: dict[str, list[int]] = {"demuxed": [], "decoded": []}
    open_pyav = decoders._open_pyav
    monkeypatch.setattr(decoders, "_open_pyav", lambda p: _CountingContainer(open_pyav(p), log))
    frames = read_frames(path, [36, 34])
    np.testing.assert_array_equal(frames, read_all_frames(path)[[36, 34]])
    assert min(log["demuxed"]) > 0  # it seeked instead of starting at the first frame
    # H.264, keyframes every 8: from keyframe 32 to 36, plus the decoder's reordering delay;
    # MJPEG (intra-only): only the two wanted frames.
    assert len(log["decoded"]) <= max_decoded, log


def test_probe_counts_packets_when_the_container_has_no_frame_count(make_video):
    path = make_video(container="webm", num_frames=17)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # webm keeps no count
    assert probe(path).num_frames == 17


def test_probe_non_integer_rate_and_any_size(make_video):
    path = make_video(container="mp4", fps=30000 / 1001, height=36, width=80, num_frames=12)
    info = probe(path)
    assert info.fps == pytest.approx(29.97, abs=1e-3)
    assert (info.num_frames, info.height, info.width) == (12, 36, 80)
    assert read_frames(path, [11]).shape == (1, 36, 80, 3)


def test_frames_past_the_decodable_end_are_clamped_unless_strict(make_video, tmp_path):
    good = make_video(container="avi", num_frames=T)  # MJPEG: the header keeps saying 30 frames
    truncated = tmp_path / "truncated.avi"
    data = good.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    decodable = read_all_frames(truncated)
    assert 0 < len(decodable) < T and probe(truncated).num_frames == T
    np.testing.assert_array_equal(read_frames(truncated, [T - 1, 1]), decodable[[-1, 1]])
    with pytest.raises(VideoDecodeError, match="past the last decodable frame"):
        read_frames(truncated, [0, T - 1], strict=True)


def test_frame_folder_reads_like_a_video(make_video, video_frames):
    folder = make_video(container="frames", num_frames=12)  # frame_1.png ... frame_12.png
    source = video_frames(12)
    assert is_frame_folder(folder)
    assert probe(folder) == VideoInfo(num_frames=12, fps=DEFAULT_FOLDER_FPS, height=48, width=64)
    np.testing.assert_array_equal(read_all_frames(folder), source)  # numbers sort as numbers
    np.testing.assert_array_equal(np.stack(list(iter_frames(folder))), source)
    for backend in BACKENDS:  # frame folders read the same whatever the backend
        np.testing.assert_array_equal(read_frames(folder, [11, 2, 2, 40], backend),
                                      source[[11, 2, 2, 11]])
    (folder / FPS_FILE).write_text("12.5\n")
    assert probe(folder).fps == 12.5


def test_bad_frame_folders(make_video):
    folder = make_video(container="frames", num_frames=4)
    (folder / FPS_FILE).write_text("fast")
    with pytest.raises(VideoDecodeError, match=FPS_FILE):
        probe(folder)
    (folder / FPS_FILE).unlink()
    (folder / "frame_5.png").write_text("not a png")
    with pytest.raises(VideoDecodeError, match="frame_5.png is not a readable image") as error:
        read_frames(folder, [4])
    assert error.value.path == str(folder)
    (folder / "frame_5.png").unlink()
    from PIL import Image

    Image.new("RGB", (10, 10)).save(folder / "frame_6.png")
    with pytest.raises(VideoDecodeError, match="frame_6.png is 10x10"):
        read_all_frames(folder)


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_files_raise_video_decode_error_naming_file_and_reason(kind, make_bad_video):
    path = make_bad_video(kind)
    calls = [probe, lambda p: read_frames(p, [0]), read_all_frames, lambda p: list(iter_frames(p))]
    for call in calls:
        with pytest.raises(VideoDecodeError) as error:
            call(path)
        assert error.value.path == str(path) and error.value.reason
        assert str(path) in str(error.value) and error.value.reason in str(error.value)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "pyav"])
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_files_raise_video_decode_error_in_every_backend(kind, backend, make_bad_video):
    require_backend(backend)
    path = make_bad_video(kind)
    for call in [lambda p: probe(p, backend), lambda p: read_frames(p, [0], backend)]:
        with pytest.raises(VideoDecodeError) as error:
            call(path)
        assert error.value.path == str(path) and error.value.reason


def test_video_decode_error_survives_pickling():  # it crosses worker processes
    error = pickle.loads(pickle.dumps(VideoDecodeError("a/b.mp4", "broken")))
    assert (error.path, error.reason) == ("a/b.mp4", "broken") and "a/b.mp4" in str(error)


def test_unknown_backend_and_bad_indices(make_video):
    path = make_video(num_frames=4)
    with pytest.raises(UserError, match="pyav"):
        read_frames(path, [0], backend="nope")
    with pytest.raises(ValueError):
        read_frames(path, [])
    with pytest.raises(ValueError):
        read_frames(path, [-1])


def test_list_videos_walks_folders(tmp_path, make_video):
    root = tmp_path / "data"
    for name in ["a/x.mp4", "a/y.AVI", "b/c/z.webm", "notes.txt", ".hidden/h.mp4", "a/.v.mp4",
                 "mixed/v.mp4", "mixed/cover.jpg"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    (root / "empty").mkdir()
    frames = make_video(name="clip", container="frames", num_frames=2, folder=root / "b")
    expected = [root / "a/x.mp4", root / "a/y.AVI", frames, root / "b/c/z.webm",
                root / "mixed/v.mp4"]  # mixed/ holds a video, so it is no frame folder
    assert list_videos(root) == sorted(expected)
    assert list_videos(root, extensions=["webm"]) == sorted([frames, root / "b/c/z.webm"])
    assert list_videos(root, extensions=[".AVI", "mp4"]) == sorted(
        [root / "a/x.mp4", root / "a/y.AVI", frames, root / "mixed/v.mp4"])
    assert list_videos(frames) == [frames]

    with pytest.raises(UserError, match="does not exist"):
        list_videos(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no videos"):
        list_videos(root / "empty")


def test_list_videos_reads_list_files(tmp_path):
    for name in ["data/a/x.mp4", "data/b/z.webm", "elsewhere/w.avi"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    lists = tmp_path / "data" / "lists"
    lists.mkdir()
    train = lists / "train.txt"
    train.write_text(f"# training videos\n\n../b/z.webm\n  ../a/x.mp4  \n"
                     f"{tmp_path / 'elsewhere/w.avi'}\n")
    assert list_videos(train) == sorted([tmp_path / "data/a/x.mp4", tmp_path / "data/b/z.webm",
                                         tmp_path / "elsewhere/w.avi"])

    train.write_text("../a/x.mp4\n# comment\n../a/missing.mp4\n")
    with pytest.raises(UserError, match=r"train.txt, line 3: \.\./a/missing.mp4 does not exist"):
        list_videos(train)
    train.write_text("# nothing here\n\n")
    with pytest.raises(UserError, match="lists no videos"):
        list_videos(train)


def test_list_videos_takes_one_video_file(tmp_path):
    # Any file with a video suffix is one video, never read as a list of paths.
    one = tmp_path / "one.MP4"
    one.write_bytes(b"\x00\x00\x00\x18ftypmp42\xff\xfe")
    assert list_videos(one) == [one]
    odd = tmp_path / "clip.vid"
    odd.write_bytes(b"\x00\xff")
    assert list_videos(odd, extensions=["vid"]) == [odd]


def test_list_file_names_a_file_whose_name_is_not_utf8(tmp_path):
    latin1 = tmp_path / os.fsdecode(b"caf\xe9.mp4")
    latin1.touch()
    listing = tmp_path / "list.txt"
    listing.write_bytes(codecs.BOM_UTF8 + b"caf\xe9.mp4\r\n")
    assert list_videos(listing) == [latin1]
    assert list_videos(listing)[0].exists()


def test_binary_list_file_is_one_clear_error(tmp_path):
    blob = tmp_path / "clip.bin"  # e.g. a video whose suffix is not a known extension
    blob.write_bytes(b"\x1aE\xdf\xa3\x00\x00\xff\xfe\x80")
    with pytest.raises(UserError, match=r"clip.bin is not a text list of videos .*pass a "
                                        r"folder, a video file or a UTF-8 text file"):
        list_videos(blob)


def test_no_videos_message_names_the_option_to_set(tmp_path):
    with pytest.raises(UserError, match=r"no videos .* with data.extensions$"):
        list_videos(tmp_path)
    with pytest.raises(UserError, match=r"no videos .* with --ext$"):
        list_videos(tmp_path, extensions_option="--ext")


def test_list_videos_follows_symlinked_folders(tmp_path):
    # Corpora are often assembled from links to folders on other disks.
    elsewhere = tmp_path / "disk2" / "kinetics_part2"
    for name in ["a.mp4", "deep/b.mp4"]:
        (elsewhere / name).parent.mkdir(parents=True, exist_ok=True)
        (elsewhere / name).touch()
    root = tmp_path / "corpus"
    (root / "local").mkdir(parents=True)
    (root / "local" / "c.mp4").touch()
    (root / "part2").symlink_to(elsewhere, target_is_directory=True)
    (root / "part2_again").symlink_to(elsewhere, target_is_directory=True)  # listed once
    assert list_videos(root) == [root / "local/c.mp4", root / "part2/a.mp4",
                                 root / "part2/deep/b.mp4"]


def test_list_videos_ends_a_symlink_loop_and_lists_each_video_once(tmp_path):
    root = tmp_path / "corpus"
    for name in ["x.mp4", "sub/y.mp4"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # a loop to the parent
    (root / "sub" / "self").symlink_to(root / "sub", target_is_directory=True)
    # A link's real folder, met first in the walk, keeps its real path ("a_link" < "z").
    (root / "z").mkdir()
    (root / "z" / "w.mp4").touch()
    (root / "a_link").symlink_to(root / "z", target_is_directory=True)
    expected = [root / "sub/y.mp4", root / "x.mp4", root / "z/w.mp4"]
    assert list_videos(root) == expected
    assert list_videos(root / "sub") == [root / "sub/up/x.mp4", root / "sub/up/z/w.mp4",
                                         root / "sub/y.mp4"]
