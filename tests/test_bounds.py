"""Sizes that are allocated whole (clip length, test clips, cache crops, batch size) have upper
bounds, checked as the config loads: 1e8 is one line with the reason, exit 2, and nothing is
read, allocated or written; before, it was a MemoryError traceback or a run that never ended."""

import subprocess
import sys

import pytest
from test_bad_inputs import SMALL

from distinit.cli import main
from distinit.config import ConfigError, load_config


@pytest.mark.parametrize("command, key, fragment", [
    ("finetune", "data.clip_len", "a clip is held in memory whole"),
    ("eval", "data.num_test_clips", "every test video is evaluated on all of them"),
    ("cache-targets", "distill.cache_crops", "the teachers run on every frame of every crop"),
    ("distill", "optim.batch_size", "the activations of more than 4096 clips"),
])
def test_a_huge_size_is_one_line_and_nothing_is_written(command, key, fragment, world,
                                                        teacher_file, labeled, tmp_path, capsys):
    out = tmp_path / "out"
    data = labeled if command in ("finetune", "eval") else [
        f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]', f"data.videos={world.corpus_dir}",
        f"distill.target_cache={out}"]
    capsys.readouterr()
    assert main([command, *SMALL, *data, f"out_dir={out}", f"{key}=1e8"]) == 2
    err = capsys.readouterr().err
    limit = 4096 if key in ("data.clip_len", "optim.batch_size") else 1000
    assert err.splitlines() == [f"distinit {command}: error: {key} must be <= {limit}, got "
                                f"100000000: {err.split(': ', 4)[-1].strip()}"]
    assert fragment in err and "Traceback" not in err
    assert not out.exists()


def test_the_command_line_neither_hangs_nor_raises_memory_error(tmp_path, labeled):
    run = subprocess.run([sys.executable, "-m", "distinit.cli", "finetune", *SMALL, *labeled,
                          f"out_dir={tmp_path / 'f'}", "data.clip_len=100000000"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "MemoryError" not in run.stderr
    assert run.stderr.startswith("distinit finetune: error: data.clip_len must be <= 4096, got "
                                 "100000000: ")


def test_whole_numbers_in_exponent_notation_are_ints(tmp_path):
    cfg = load_config(None, ["data.clip_len=1.6e1", "data.num_test_clips=1e3", "data.crop=1.5e1",
                             "optim.batch_size=64.0", "distill.cache_crops=2E1"])
    assert (cfg.data.clip_len, cfg.data.num_test_clips, cfg.optim.batch_size, cfg.data.crop,
            cfg.distill.cache_crops) == (16, 1000, 64, 15, 20)
    assert all(type(v) is int for v in (cfg.data.clip_len, cfg.optim.batch_size))
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  clip_len: 1.0e+8\n")  # YAML's float
    with pytest.raises(ConfigError, match="data.clip_len must be <= 4096, got 100000000"):
        load_config(f)
    for bad, said in [("data.crop=1.5", "data.crop: expected int, got 1.5"),
                      ("seed=1e30", f"seed must be <= 4294967295, got {10**30}: numpy's seeds"),
                      ("seed=1e500", "seed: expected int, got '1e500'"),
                      ("seed=.nan", "seed: expected int, got nan")]:
        with pytest.raises(ConfigError, match=said):
            load_config(None, [bad])


def test_the_limits_themselves_are_accepted():
    cfg = load_config(None, ["data.clip_len=4096", "data.num_test_clips=1000",
                             "distill.cache_crops=1000", "optim.batch_size=4096"])
    assert (cfg.data.clip_len, cfg.optim.batch_size) == (4096, 4096)


@pytest.mark.parametrize("override, said", [
    ("optim.epoch_size=1e20", f"optim.epoch_size must be <= 1000000000000, got {10**20}: clips per"),
    ("seed=1e23", f"seed must be <= 4294967295, got {10**23}: numpy's seeds are 32-bit"),
    ("optim.epochs=1e308", "optim.epochs must be <= 1000000.0, got 1e+308: a schedule this long"),
    ("optim.lr=1e308", "optim.lr must be <= 10, got 1e+308: SGD and AdamW diverge"),
    ("model.width=1e8", "model.width must be <= 1024, got 100000000: channels of the first"),
    ("model.layers=[1,1,1e9,1]", "model.layers[2] must be <= 64, got 1000000000"),
    ("data.crop=1e6", "data.crop must be <= 4096, got 1000000: clips are held in memory"),
    ("optim.accum_steps=1e9", "optim.accum_steps must be <= 4096"),
    ("data.split=1e9", "data.split must be <= 100"),
    ("log_every=1e12", "log_every must be <= 2147483647"),  # every whole number has a bound
])
def test_every_size_is_bounded_with_the_bound_in_the_message(override, said, labeled, tmp_path,
                                                              capsys):
    capsys.readouterr()
    assert main(["finetune", *SMALL, *labeled, f"out_dir={tmp_path / 'f'}", override]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"distinit finetune: error: {said}"), err
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("method, key", [("modist", "queue"), ("auxskd", "queue"),
                                         ("rspnet", "queue"), ("modist", "dim")])
def test_method_sizes_are_bounded(method, key):
    from distinit.methods import config_class

    with pytest.raises(ConfigError, match=f"{method}.{key} must be <= "):
        load_config(None, [f"{method}.{key}=1e12"], cls=config_class(method))


def test_a_huge_epoch_is_sampled_step_by_step_and_as_before():
    """The sampler holds one pass at a time, never the epoch's index list, and gives the order
    it gave when it built that list."""
    import tracemalloc

    import torch

    from distinit.engine.sampler import StreamSampler

    def whole_epoch(s: StreamSampler) -> list[int]:  # the sampler before: the list at once
        epoch, first = divmod(s.start_step, s.steps_per_epoch)
        lo = epoch * s.epoch_len + first * s.global_batch
        hi = epoch * s.epoch_len + s.steps_per_epoch * s.global_batch
        items = torch.cat([s._pass(p) for p in range(lo // s.size, (hi - 1) // s.size + 1)])
        items = items[lo - lo // s.size * s.size:][:hi - lo]
        steps = items.view(-1, s.accum_steps, s.world, s.batch_size)
        return steps[:, :, s.rank].flatten().tolist()

    for kw in [dict(size=10, batch_size=3, epoch_size=25), dict(size=7, batch_size=2, world=2,
               rank=1, accum_steps=2, epoch_size=40), dict(size=13, batch_size=4)]:
        for step in (0, 1, 5):
            s = StreamSampler(seed=3, **kw)
            s.set_step(step)
            assert list(s) == whole_epoch(s)
    s = StreamSampler(1000, 8, seed=0, epoch_size=10**12)
    s.set_step(10**9)
    tracemalloc.start()
    first = [next(iter(s)) for _ in range(3)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(set(first)) == 1 and peak < 2**20
