"""`distinit plan` and the size estimates of `store-clips` and `cache-targets`, checked against
real small runs and stores built on videos written here."""

import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from conftest import pattern_frames

from distinit.cli import main
from distinit.data.corpus.sample import extrapolate, sample_corpus, uniform_corpus
from distinit.data.stores.disk_room import nearest_existing
from distinit.data.stores.size import clip_store_bytes
from distinit.data.video.io import list_videos, write_video
from distinit.models.flops import counted, training_flops

Usage = namedtuple("Usage", "total used free")  # what shutil.disk_usage returns
# Videos of different lengths and sizes, so an extrapolation has something to miss.
SHAPES = [(12, 48, 64), (9, 40, 64), (16, 48, 48), (30, 64, 48), (10, 48, 64), (21, 36, 64),
          (14, 48, 64), (25, 48, 40), (11, 64, 64), (18, 48, 64)]
# epochs=1.5: 9 training videos (one held out) // batch 2 = 4 steps an epoch, 6 in all;
# frame_step=4 and 3 crops: a cache with several rows and boxes per video.
SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=40",
         "data.crop=32", "data.clip_len=4", "data.num_workers=0", "optim.batch_size=2",
         "optim.epochs=1.5", "log_every=1", "distill.holdout=1", "distill.cache_crops=3",
         "distill.cache_frame_step=4", "distill.cache_shard_size=4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for i, (frames, height, width) in enumerate(SHAPES):
        write_video(root / f"v{i}.mp4", pattern_frames(frames, height, width), fps=10, gop=4)
    return root


@pytest.fixture
def args(corpus, teacher_file, tmp_path) -> list[str]:
    return [*SMALL, f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]',
            f"data.videos={corpus}", f"data.cache_dir={tmp_path / 'store'}",
            f"distill.target_cache={tmp_path / 'cache'}", f"out_dir={tmp_path / 'run'}"]


def _plan(argv: list[str], tmp_path: Path, capsys) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["plan", *argv, "--json", str(tmp_path / "plan.json")]) == 0
    return json.loads((tmp_path / "plan.json").read_text()), capsys.readouterr().out


def _shards(folder: Path) -> int:
    files = list(folder.rglob("shard-*.safetensors"))
    assert files
    return sum(f.stat().st_size for f in files)


def test_plan_matches_a_real_distillation_and_the_stores_it_builds(args, tmp_path, capsys):
    plan, out = _plan([*args, "--gpus", "1,2"], tmp_path, capsys)
    assert main(["store-clips", *args]) == 0
    said = capsys.readouterr().out
    assert "clip store of the corpus (data.videos): expect about" in said
    assert main(["cache-targets", *args]) == 0
    said = capsys.readouterr().out
    assert "teacher-target cache: expect about" in said and "teacher FLOPs" in said
    assert main(["distill", *args, "data.cache=store"]) == 0

    one, two = plan["runs"]
    assert plan["corpus"] == {"videos": 10, "training_videos": 9, "exact": True,
                              "source": "every video of 10 probed", "probe_failed": 0}
    ckpt = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert (one["steps_per_epoch"], one["steps"]) == (4, 6) == (4, ckpt["step"])
    assert max(r["step"] for r in logged) == one["steps"]
    assert (two["global_batch"], two["steps"]) == (4, 3)  # 9 // 4 = 2 an epoch, x 1.5
    # Every video was probed, and probing reads the frame count the decoder gives, so what is
    # left is the safetensors headers: estimated from above (every data offset as wide as the
    # file, the most padding), a few bytes per array. That is 0.005% of this store, and 1.2% of
    # this cache, whose arrays hold ~240 bytes each (a Kinetics video's hold 300 kB).
    store, cache = _shards(tmp_path / "store"), _shards(tmp_path / "cache")
    assert store <= plan["clip_store"]["bytes"] <= 1.001 * store
    assert cache <= plan["target_cache"]["bytes"] <= 1.02 * cache
    assert plan["clip_store"]["rel_error"] == 0 == plan["target_cache"]["rel_error"]
    # the cache ran the teacher on 3 boxes x ceil(frames / 4) rows of every video
    rows = sum(3 * -(-f // 4) for f, _, _ in SHAPES)
    assert plan["target_cache"]["teacher_frames"] == rows
    assert plan["target_cache"]["build_flops"] == rows * plan["teachers"][0]["flops"] > 0
    assert plan["live_teacher_frames_per_clip"] == 0  # distill.target_cache: no live teacher
    assert "ASSUMED, not measured" in out and "2,040 clips/s per GPU" in out
    assert "every video of 10 probed" in out


def test_a_sample_is_extrapolated_to_the_corpus_with_its_standard_error(corpus):
    videos = list_videos(corpus)
    part = sample_corpus(videos, 4, seed=1)
    assert part == sample_corpus(videos, 4, seed=1)  # every rank draws the same
    assert len(set(part.shapes)) == 4 and not part.exact
    assert part.source == "4 random videos of 10 probed"
    assert {(s.num_frames, s.height, s.width) for s in part.shapes} <= set(SHAPES)
    # by hand: each sampled video's frames at short side 40, uint8; mean x 10 videos
    data = [s.num_frames * 3 * (40 * int(40 * max(s.height, s.width) / min(s.height, s.width)))
            for s in part.shapes]
    mean = sum(data) / 4
    guess = clip_store_bytes(part, 40)
    assert 0 < guess.value - 10 * mean < 10 * 100 + 17  # the rest is headers
    sd = (sum((d - mean) ** 2 for d in data) / 3) ** 0.5
    assert guess.rel_error == pytest.approx(sd / 4 ** 0.5 * (1 - 4 / 10) ** 0.5 / mean, rel=0.01)
    # all probed: exact, no error
    assert clip_store_bytes(sample_corpus(videos, 10), 40).rel_error == 0
    # 10 of 300-frame 240x320 videos at short side 128: 128 x 170 (as resize_short_side rounds)
    k400 = clip_store_bytes(uniform_corpus(10, 300, 240, 320), 128, shard_size=16)
    assert 0 < k400.value - 10 * 300 * 128 * 170 * 3 < 10 * 100 + 17  # + the headers
    assert extrapolate(uniform_corpus(7, 1, 1, 1), lambda s: 2.0).value == 14.0


@pytest.mark.parametrize("command", ["store-clips", "cache-targets"])
def test_a_disk_without_room_is_refused_in_one_line(command, args, tmp_path, capsys,
                                                    monkeypatch):
    seen = []

    def full(path):
        seen.append(Path(path))
        return Usage(10**9, 10**9 - 1000, 1000)

    monkeypatch.setattr(shutil, "disk_usage", full)
    assert main([command, *args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    folder = tmp_path / ("store" if command == "store-clips" else "cache")
    assert lines[0].startswith(f"distinit {command}: error: not enough room for the ")
    assert f"at {folder}: it needs about" in lines[0] and "+5% margin" in lines[0]
    assert f"the file system of {tmp_path} has 1 kB free; free " in lines[0]
    assert seen == [tmp_path]  # the nearest folder that exists: the target is not made yet
    assert not folder.exists()  # refused before anything was written


def test_plan_without_the_corpus_describes_it_and_says_what_it_assumed(tmp_path, capsys):
    cfg = str(Path(__file__).parents[1] / "configs" / "distill_r2plus1d18_table1_center.yaml")
    assert main(["plan", cfg, "data.videos=/nonexistent/k400"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--videos-per-corpus N --frames-per-video F" in err
    plan, out = _plan([cfg, "data.videos=/nonexistent/k400", "--videos-per-corpus", "240000",
                       "--frames-per-video", "300", "--frame-size", "240x320", "--gpus", "8,64",
                       "--clips-per-gpu", "1000", "--measured"], tmp_path, capsys)
    assert "ASSUMED" not in out and "(measured)" in out
    assert plan["clips_nominal"] == 45_000_000
    eight, sixty_four = plan["runs"]
    assert (eight["global_batch"], eight["steps"]) == (192, 45 * (1_000_000 // 192))
    assert (sixty_four["global_batch"], sixty_four["steps"]) == (1536, 45 * 651)
    assert eight["gpu_hours"] == pytest.approx(eight["clips"] / 1000 / 3600)
    assert sixty_four["wall_hours"] == pytest.approx(sixty_four["gpu_hours"] / 64)
    t = plan["target_cache"]  # the config's affordable cache: 4 crops, every 8th frame
    assert (t["crops"], t["frame_step"], t["teacher_frames"]) == (4, 8, 240_000 * 4 * 38)
    assert t["bytes"] == pytest.approx(240_000 * 4 * 38 * 1000 * 2, rel=0.01)
    assert plan["teachers"][0]["classes"] == 1000 and plan["teachers"][0]["note"].endswith(
        "untrained network of its architecture: teacher weights not found: "
        "weights/resnet50-0676ba61.pth")


def test_flops_are_counted_not_guessed():
    lin = torch.nn.Linear(10, 20, bias=False)
    x = torch.randn(3, 10)
    assert counted(lambda: lin(x)) == 2 * 3 * 10 * 20
    # forward, then the input's and the weight's gradients: three matrix products
    assert training_flops(lin, x.requires_grad_()) == 3 * 2 * 3 * 10 * 20
    assert nearest_existing("/nonexistent/a/b") == Path("/")
