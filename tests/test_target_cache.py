"""The teacher-target cache: built once, read instead of the teachers, refused when stale."""

import json
import os

import numpy as np
import pytest
import torch

from distinit.build import resolve_normalization
from distinit.cli import main
from distinit.config import load_config
from distinit.data.stores import shards
from distinit.data.video.io import list_videos
from distinit.engine import dist
from distinit.methods.distinit import build
from distinit.targets.cache import WHAT, _encode, decode_logits
from distinit.targets.frames import unnormalize

SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=40",
         "data.crop=32", "data.num_workers=0", "optim.batch_size=4", "optim.epochs=1",
         "log_every=1", "distill.frames=multi", "distill.num_frames=3", "distill.cache_crops=3",
         "distill.cache_shard_size=8", "distill.holdout=4"]


@pytest.fixture
def cache_args(world, teacher_file, tmp_path):
    return [*SMALL, f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]',
            f"data.videos={world.corpus_dir}", f"distill.target_cache={tmp_path / 'cache'}"]


def test_cached_targets_match_live_teachers(cache_args, tmp_path):
    assert main(["cache-targets", *cache_args]) == 0
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["what"] == WHAT and manifest["num_shards"] >= 2
    cached = build(resolve_normalization(load_config(None, cache_args)))
    live = build(resolve_normalization(load_config(
        None, [a for a in cache_args if "target_cache" not in a])))
    items = [cached.dataset[i] for i in range(6)]
    batch = torch.utils.data.default_collate(items)
    assert batch["teacher_logits0"].shape[:2] == (6, 8)  # (B, T, C): every frame of the clip
    # The live teacher on every frame of the very pixels the student got (the cached box).
    method = live.method
    teacher = method.targets.teachers[0]

    def live_logits(video: torch.Tensor) -> torch.Tensor:
        pixels = unnormalize(video.transpose(1, 2), method.targets.mean,
                             method.targets.std)  # (B, T, 3, H, W)
        return teacher(pixels.flatten(0, 1)).view(*pixels.shape[:2], -1)

    stored = batch["teacher_logits0"]
    error = (live_logits(batch["video"]) - stored).abs().max().item()
    assert error < 1e-2  # float16 storage of fp32 logits
    # a mirrored clip is other pixels: the check can tell them apart
    assert (live_logits(batch["video"].flip(-1)) - stored).abs().max().item() > 10 * error
    # and Eq. 1's targets over the frames the method picks agree
    no_cache = {k: v for k, v in batch.items() if not k.startswith("teacher_logits")}
    from_cache = cached.method.prepare(batch)["targets"][0]
    from_live = method.prepare(no_cache)["targets"][0]
    assert torch.allclose(from_cache, from_live, atol=1e-3)


def test_distill_reads_the_cache_and_measures_the_live_teacher(cache_args, tmp_path):
    # no cache-targets first: the first run builds the cache, a second one reads it
    assert main(["distill", *cache_args, f"out_dir={tmp_path / 'run'}"]) == 0
    assert (tmp_path / "cache" / "manifest.json").is_file()
    before = {f: f.stat().st_mtime_ns for f in (tmp_path / "cache").glob("shard-*")}
    assert main(["distill", *cache_args, f"out_dir={tmp_path / 'run2'}"]) == 0
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "cache").glob("shard-*")} == before
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert steps and all(np.isfinite(x["loss"]) for x in steps)
    assert "holdout_agree_t0" in lines[-1]  # held-out agreement still uses the live teacher


@pytest.mark.parametrize("change", ["data.crop=24", "distill.cache_crops=2",
                                    "distill.cache_frame_step=2", "data.scale=[0.5,1]"])
def test_a_stale_cache_is_refused(cache_args, tmp_path, capsys, change):
    assert main(["cache-targets", *cache_args]) == 0
    capsys.readouterr()
    assert main(["distill", *cache_args, change, f"out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stale" in err and "cache-targets" in err
    assert not (tmp_path / "run" / "last.pt").exists()
    # and building into the old folder with the new settings is refused, not mixed
    assert main(["cache-targets", *cache_args, change]) == 2
    assert "made for something else" in capsys.readouterr().err


def test_changed_teacher_weights_make_the_cache_stale(cache_args, teacher_file, tmp_path, capsys):
    assert main(["cache-targets", *cache_args]) == 0
    other = tmp_path / "teacher2.pt"
    ckpt = torch.load(teacher_file, weights_only=True)
    state = ckpt["state_dict"] if "state_dict" in ckpt else ckpt["model"]
    for v in state.values():
        if v.is_floating_point():
            v.add_(0.01)
    torch.save(ckpt, other)
    args = [a.replace(str(teacher_file), str(other)) for a in cache_args]
    capsys.readouterr()
    assert main(["distill", *args, f"out_dir={tmp_path / 'run'}"]) == 2
    assert "teachers" in capsys.readouterr().err


def test_a_stopped_build_resumes_and_ranks_split_the_shards(cache_args, tmp_path, monkeypatch):
    assert main(["cache-targets", *cache_args]) == 0
    folder = tmp_path / "cache"
    files = sorted(folder.glob("shard-*.safetensors"))
    before = {f: f.stat().st_mtime_ns for f in files}
    os.unlink(files[1])
    assert main(["cache-targets", *cache_args]) == 0
    assert files[1].is_file()
    assert all(f.stat().st_mtime_ns == before[f] for f in files if f != files[1])

    # Two ranks: each writes its own shards (i % world == rank), the union is the whole cache.
    split = tmp_path / "split"
    args = [a for a in cache_args if "target_cache" not in a] + [f"distill.target_cache={split}"]
    monkeypatch.setattr(dist, "barrier", lambda: None)
    for rank in (1, 0):
        monkeypatch.setattr(dist, "rank_world", lambda r=rank: (r, 2))
        monkeypatch.setattr(dist, "broadcast_object", lambda obj: obj)
        assert main(["cache-targets", *args]) == 0
        written = sorted(int(f.stem.split("-")[1]) for f in split.glob("shard-*.safetensors"))
        if rank == 1:
            assert written and all(i % 2 == 1 for i in written)
    assert len(written) == len(files)
    for f in files:  # the same boxes and logits, whichever process wrote them
        a = shards.safe_open(str(f), framework="numpy")
        b = shards.safe_open(str(split / f.name), framework="numpy")
        keys = set(a.keys())  # noqa: SIM118 (safe_open is not iterable)
        assert keys == set(b.keys())  # noqa: SIM118
        assert all(np.array_equal(a.get_tensor(k), b.get_tensor(k)) for k in keys)


def test_topk_storage_keeps_the_top_probabilities_and_the_tail_mass():
    logits = torch.randn(5, 3, 40) * 3
    exact = decode_logits(_encode(logits, 0, "float16", 0), 0, 40)
    assert torch.allclose(exact, logits, atol=1e-2)
    sparse = decode_logits(_encode(logits, 0, "topk", 6), 0, 40)
    p, q = logits.softmax(-1), sparse.softmax(-1)
    top = logits.topk(6, dim=-1).indices
    assert torch.allclose(q.gather(-1, top), p.gather(-1, top), atol=2e-3)
    tail = lambda x: 1 - x.gather(-1, top).sum(-1)  # noqa: E731
    assert torch.allclose(tail(q), tail(p), atol=2e-3)


def test_frame_step_reads_the_nearest_stored_frame(cache_args, world, tmp_path):
    args = [*cache_args, "distill.cache_frame_step=4", "distill.cache_dtype=topk",
            "distill.cache_topk=3"]
    assert main(["cache-targets", *args]) == 0
    cache = build(resolve_normalization(load_config(None, args))).dataset.targets
    video = list_videos(world.corpus_dir)[0]
    stored = cache.store.get(video, "top0")  # (F, K, k): frames 0, 4, 8, ...
    num_frames = int(cache.store.get(video, "size")[0])
    assert len(stored) == -(-num_frames // 4)
    got = cache.clip_logits(video, [0, 1, 2, 3, 5, 6, 7], box=1)[0]
    want_rows = [0, 0, 0, 1, 1, 1, 2]  # round(f / 4), ties down
    for g, r in zip(got, want_rows, strict=True):
        assert torch.equal(g.topk(3).values, torch.from_numpy(stored[r, 1]).float().sort(
            descending=True).values)


def test_crop_boxes_are_keyed_by_the_path_within_the_corpus(tmp_path):
    """The same corpus in two folders draws the same boxes; two videos of one name in two class
    folders, one of them reached through a symlinked folder, keep distinct keys."""
    from distinit.targets.cache import _corpus_key

    for root in (tmp_path / "a", tmp_path / "b"):
        (root / "wave").mkdir(parents=True)
    (tmp_path / "elsewhere" / "run").mkdir(parents=True)
    (tmp_path / "a" / "run").symlink_to(tmp_path / "elsewhere" / "run")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert _corpus_key(tmp_path / "a" / "wave" / "v.mp4", a) == "wave/v.mp4"
    assert _corpus_key(tmp_path / "b" / "wave" / "v.mp4", b) == "wave/v.mp4"
    assert _corpus_key(tmp_path / "a" / "run" / "v.mp4", a) == "run/v.mp4"
    assert _corpus_key(tmp_path / "x" / "v.mp4", a) == "v.mp4"  # outside the corpus: its name
