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
                      ("seed=1e30", "seed: expected int, got '1e30'"),
                      ("seed=.nan", "seed: expected int, got nan")]:
        with pytest.raises(ConfigError, match=said):
            load_config(None, [bad])


def test_the_limits_themselves_are_accepted():
    cfg = load_config(None, ["data.clip_len=4096", "data.num_test_clips=1000",
                             "distill.cache_crops=1000", "optim.batch_size=4096"])
    assert (cfg.data.clip_len, cfg.optim.batch_size) == (4096, 4096)
