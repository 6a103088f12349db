from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from distinit.data.clips.datasets import ImageFolderDataset, ImageReadError, VideoClipDataset
from distinit.data.clips.sampling import ClipSpec
from distinit.data.clips.sampling import test_clip_indices as clip_plan
from distinit.data.clips.transforms import ClipTransform
from distinit.data.video import frames
from distinit.data.video.frames import NoReadableVideosError, frame_source
from distinit.data.video.io import write_video
from distinit.engine.sampler import StreamSampler
from distinit.errors import UserError

LEVEL = 12  # frame t is a flat grey of 12 * t + 5, so a decoded frame tells its own index


def frame_ids(video: torch.Tensor) -> list[int]:
    """Frame indices of a (C, T, H, W) clip in [0, 1] cut from a `write_counting_video`."""
    means = video.mean(dim=(0, 2, 3)) * 255
    return [round((float(m) - 5) / LEVEL) for m in means]


def write_counting_video(path: Path, num_frames: int) -> Path:
    frames = np.empty((num_frames, 32, 40, 3), np.uint8)
    for t in range(num_frames):
        frames[t] = LEVEL * t + 5
    write_video(path, frames, fps=10, gop=4)
    return path


def write_textured_video(path: Path, num_frames: int, seed: int) -> Path:
    # Smooth random texture plus a moving bar: crops and flips change the pixels.
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (num_frames, 4, 5, 3)).repeat(8, axis=1).repeat(8, axis=2)
    for t in range(num_frames):
        base[t, :, 2 * t % 40] = 255
    write_video(path, base.astype(np.uint8), fps=10, gop=5)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("videos")
    return [write_counting_video(root / "long.mp4", 20), write_counting_video(root / "short.mp4", 5),
            write_counting_video(root / "mid.mp4", 12)]


@pytest.fixture(scope="module")
def textured(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("textured")
    return [write_textured_video(root / f"t{i}.mp4", 16, i) for i in range(4)]


@pytest.fixture
def bad_video(tmp_path) -> Path:
    path = tmp_path / "broken.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return path


def test_train_items_read_the_sampled_frames(videos):
    ds = VideoClipDataset(videos, [3, 4, 5], clips=ClipSpec(4, stride=2), seed=1)
    assert len(ds) == 3
    item = ds[0]
    assert set(item) == {"video", "label", "video_idx", "clip_idx", "index", "bad", "rng_seed"}
    assert item["video"].shape == (3, 4, 32, 40) and item["video"].dtype == torch.float32
    assert (item["label"], item["video_idx"], item["clip_idx"], item["index"], item["bad"]) == (3, 0, 0, 0, 0)
    assert frame_ids(item["video"]) == ds.clip_indices(0)
    starts = set()
    for pass_ in range(8):  # item 0 of pass p is p * len(ds)
        ids = frame_ids(ds[pass_ * len(ds)]["video"])
        assert ids == ds.clip_indices(pass_ * len(ds))
        assert np.all(np.diff(ids) == 2)
        starts.add(ids[0])
    assert len(starts) > 2  # random temporal jitter across epochs
    # The short video (5 frames) is padded by repeating its last frame.
    assert frame_ids(ds[1]["video"]) == [0, 2, 4, 4]
    assert VideoClipDataset(videos).__getitem__(2)["label"] == -1


def test_test_mode_k_clips(videos):
    ds = VideoClipDataset(videos, [0, 1, 2], clips=ClipSpec(4, mode="test", num_clips=3))
    assert len(ds) == 9
    for i in range(9):
        item = ds[i]
        assert (item["video_idx"], item["clip_idx"], item["index"]) == (i // 3, i % 3, i)
        assert item["label"] == i // 3
        num_frames = [20, 5, 12][i // 3]
        assert frame_ids(item["video"]) == clip_plan(num_frames, 4, 1, 3)[i % 3]
    assert frame_ids(ds[0]["video"]) == [0, 1, 2, 3]
    assert frame_ids(ds[2]["video"]) == [16, 17, 18, 19]
    assert ds[9]["index"] == 0  # item 9 is index 0 of the second pass
    assert len(list(ds)) == 9  # iteration is one pass
    with pytest.raises(IndexError):
        ds[-1]


def test_same_seed_and_pass_give_same_items(textured):
    transform = ClipTransform(train=True, resize=None, crop=24)

    def items(seed, pass_):
        ds = VideoClipDataset(textured, clips=ClipSpec(4, 2), transform=transform, seed=seed)
        return [ds[pass_ * len(ds) + i]["video"] for i in range(len(ds))]

    a, b = items(0, 1), items(0, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, items(0, 2)))
    assert not all(torch.equal(x, y) for x, y in zip(a, items(5, 1)))


@pytest.mark.parametrize("mode", ["train", "test"])
def test_memory_and_disk_cache_match_decoding(textured, tmp_path, mode):
    transform = ClipTransform(train=mode == "train", resize=20, crop=16)
    kwargs = dict(clips=ClipSpec(4, 3, mode, num_clips=2 if mode == "test" else 1),
                  transform=transform, seed=3)
    plain = VideoClipDataset(textured, **kwargs)
    memory = VideoClipDataset(textured, frames=frame_source("memory"), **kwargs)
    disk = VideoClipDataset(textured, frames=frame_source("disk", tmp_path / "cache"), **kwargs)
    base = 4 * len(plain)  # items of pass 4
    for i in range(base, base + len(plain)):
        expect = plain[i]["video"]
        assert torch.equal(memory[i]["video"], expect)
        assert torch.equal(disk[i]["video"], expect)
    files = sorted((tmp_path / "cache").iterdir())
    assert len(files) == len(textured) and all(f.suffix == ".npy" for f in files)  # no temp files left
    # A second dataset reuses the files instead of decoding again.
    stamps = [f.stat().st_mtime_ns for f in files]
    again = VideoClipDataset(textured, frames=frame_source("disk", tmp_path / "cache"), **kwargs)
    assert torch.equal(again[base + 1]["video"], plain[base + 1]["video"])
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_disk_cache_key_changes_with_the_file(tmp_path):
    video = write_counting_video(tmp_path / "v.mp4", 6)
    ds = VideoClipDataset([video], clips=ClipSpec(2), frames=frame_source("disk", tmp_path / "c"))
    ds.fill_cache()
    assert len(list((tmp_path / "c").iterdir())) == 1
    write_counting_video(video, 9)  # replaced: new size and mtime, so a new cache entry
    ds2 = VideoClipDataset([video], clips=ClipSpec(9, mode="test"),
                           frames=frame_source("disk", tmp_path / "c"))
    assert frame_ids(ds2[0]["video"]) == list(range(9))
    assert len(list((tmp_path / "c").iterdir())) == 2


def test_memory_cache_decodes_once(textured, monkeypatch):
    calls = []
    real = frames.read_all_frames
    monkeypatch.setattr(frames, "read_all_frames",
                        lambda p, *args: calls.append(p) or real(p, *args))
    ds = VideoClipDataset(textured[:2], clips=ClipSpec(4), frames=frame_source("memory"))
    ds.fill_cache()
    _ = [ds[i] for i in range(3 * len(ds))]  # three passes
    assert sorted(calls) == sorted(textured[:2])


def test_bad_video_is_replaced_warned_once_and_counted(videos, bad_video, capsys):
    ds = VideoClipDataset([videos[0], bad_video, videos[2]], [0, 1, 2],
                          clips=ClipSpec(4, mode="test", num_clips=2))
    item = ds[3]  # video 1, clip 1 -> the same clip of video 2
    # One plain line, with no line of library source after it.
    assert capsys.readouterr().err == (
        f"warning: skipping video {bad_video}: {ds.bad.reasons[bad_video]}\n")
    assert (item["video_idx"], item["clip_idx"], item["index"], item["label"], item["bad"]) == (2, 1, 5, 2, 1)
    assert ds[2]["bad"] == 1 and ds[2]["video_idx"] == 2
    assert ds[0]["bad"] == 0
    assert capsys.readouterr().err == ""  # warned once
    assert ds.bad.files == {bad_video}
    assert "1 of 3 videos skipped" in ds.bad.report() and "broken.mp4" in ds.bad.report()
    # The last video wraps around to the first.
    ds = VideoClipDataset([videos[0], bad_video], clips=ClipSpec(4))
    assert ds[1]["video_idx"] == 0
    assert "skipping video" in capsys.readouterr().err


def test_bad_video_warned_once_across_workers_and_epochs(textured, bad_video, capfd,
                                                         monkeypatch):
    ds = VideoClipDataset([*textured[:2], bad_video], clips=ClipSpec(4))
    # Not persistent: every epoch starts new worker processes.
    loader = DataLoader(ds, batch_size=1, num_workers=2)
    for _epoch in range(2):
        assert sum(int(batch["bad"].sum()) for batch in loader) == 1
    err = capfd.readouterr().err  # capfd: the workers write to the process's stderr
    assert err.count(f"warning: skipping video {bad_video}: ") == 1
    assert err.count("broken.mp4") == 1  # and no line of source naming it
    # A worker found it, yet this process skips it too, without decoding it again.
    probed = []
    real_probe = frames.probe
    monkeypatch.setattr(frames, "probe", lambda path, *args: probed.append(path)
                        or real_probe(path, *args))
    assert ds[2]["bad"] == 1 and bad_video not in probed
    assert ds.bad.files == set() and ds.bad.report() == "1 of 3 videos skipped"
    assert capfd.readouterr().err == ""


def test_all_bad_raises_user_error(bad_video, tmp_path):
    other = tmp_path / "missing.mp4"
    ds = VideoClipDataset([bad_video, other], clips=ClipSpec(4))
    with pytest.raises(NoReadableVideosError) as info:
        ds[0]
    assert isinstance(info.value, UserError)
    assert "none of the 2 videos could be decoded" in str(info.value)
    with pytest.raises(UserError, match="cache_dir"):
        frame_source("disk")


def test_loader_with_two_workers_matches_in_process(textured, bad_video, tmp_path):
    files = [*textured, bad_video]
    transform = ClipTransform(train=True, resize=None, crop=24)

    def run(num_workers):
        ds = VideoClipDataset(files, [0, 1, 2, 3, 4], clips=ClipSpec(4, 2), transform=transform,
                              frames=frame_source("disk", tmp_path / f"c{num_workers}"), seed=9)
        sampler = StreamSampler(len(ds), batch_size=1, seed=9)  # every item, shuffled
        loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=num_workers,
                            persistent_workers=num_workers > 0)
        epochs = []
        for epoch in range(2):
            sampler.set_step(epoch * sampler.steps_per_epoch)
            epochs.append([(b["index"].tolist(), b["video"], int(b["bad"].sum())) for b in loader])
        return epochs

    inline, workers = run(0), run(2)
    for epoch_a, epoch_b in zip(inline, workers):
        assert [idx for idx, _, _ in epoch_a] == [idx for idx, _, _ in epoch_b]
        assert all(torch.equal(va, vb) for (_, va, _), (_, vb, _) in zip(epoch_a, epoch_b))
        assert sum(bad for _, _, bad in epoch_b) == 1  # the broken file, counted across workers
        assert sorted(i for idx, _, _ in epoch_b for i in idx) == [0, 0, 1, 2, 3]  # 4 -> 0
    # Each epoch (a new pass) draws new clips for the same items.
    clips = [{i: v for idx, videos, _ in epoch for i, v in zip(idx, videos)} for epoch in workers]
    assert any(not torch.equal(clips[0][i], clips[1][i]) for i in range(4))


def write_image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ["cat", "dog"]:
        (root / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "dog" / "notes.txt").write_text("not an image")


def test_image_folder_dataset(tmp_path):
    write_image_folder(tmp_path / "stills")
    plain = ImageFolderDataset(tmp_path / "stills")
    assert len(plain) == 6 and plain.classes == ["cat", "dog"]
    item = plain[4]
    assert item["label"] == 1 and item["index"] == 4
    pixels = np.array(Image.open(tmp_path / "stills/dog/1.png"))
    assert torch.allclose(item["image"], torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    transform = ClipTransform(train=True, resize=None, crop=16)
    cached = ImageFolderDataset(tmp_path / "stills", transform, cache=True, seed=2)
    uncached = ImageFolderDataset(tmp_path / "stills", transform, seed=2)
    assert all(torch.equal(cached[i]["image"], uncached[i]["image"]) for i in range(6))
    assert cached[0]["image"].shape == (3, 16, 16)
    batch = next(iter(DataLoader(cached, batch_size=4, shuffle=True)))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].shape == (4,)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ImageReadError, match="image folder not found"):
        ImageFolderDataset(tmp_path / "none")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ImageReadError, match="no images"):
        ImageFolderDataset(tmp_path / "empty")
    (tmp_path / "empty" / "cat" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"cannot read image .*x.png"):
        ImageFolderDataset(tmp_path / "empty", cache=True)


def test_three_crop_test_views_each_clip_through_left_centre_and_right(textured):
    """3 crops x K clips: item k of a video is clip k // 3 through crop k % 3; the centre crop is
    bitwise the 1-crop test's item, and the side crops are the frame's two ends."""
    transform = ClipTransform(train=False, resize=None, crop=24, mean=(0, 0, 0), std=(1, 1, 1))
    one = VideoClipDataset(textured, clips=ClipSpec(4, mode="test", num_clips=2),
                           transform=transform)
    three = VideoClipDataset(textured, clips=ClipSpec(4, mode="test", num_clips=2, crops=3),
                             transform=transform)
    raw = VideoClipDataset(textured, clips=ClipSpec(4, mode="test", num_clips=2))  # 32 x 40
    assert len(three) == 3 * len(one) == 4 * 2 * 3
    for video in range(4):
        for clip in range(2):
            whole = raw[video * 2 + clip]["video"]  # (3, 4, 32, 40) in [0, 1]
            left, centre, right = (three[video * 6 + clip * 3 + k] for k in range(3))
            assert {d["video_idx"] for d in (left, centre, right)} == {video}
            assert torch.equal(centre["video"], one[video * 2 + clip]["video"])
            assert torch.equal(left["video"], whole[..., 4:28, 0:24])
            assert torch.equal(centre["video"], whole[..., 4:28, 8:32])
            assert torch.equal(right["video"], whole[..., 4:28, 16:40])
    with pytest.raises(ValueError, match="crops must be 1 in train mode"):
        ClipSpec(4, crops=3)
