"""A run is never silently overwritten, resumes only with its own config, survives signals and
full disks, and a seed means a run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn
from toy import ToyClips, toy_net

from distinit.cli import main
from distinit.config import load_config
from distinit.engine.checkpoint import load_checkpoint
from distinit.engine.train import train
from distinit.errors import UserError
from distinit.methods.distinit import DistInit
from distinit.methods.heads import MultiHeadStudent
from distinit.methods.supervised import Supervised

ARGS = ["precision=fp32", "channels_last=off", "data.num_workers=0", "optim.epochs=2",
        "optim.batch_size=8", "optim.lr=0.1", "log_every=1", "ckpt_every=100"]


def _train(out, *extra, resume=False, overwrite=False):
    cfg = load_config(None, [*ARGS, f"out_dir={out}", *extra])
    net = toy_net()
    train(cfg, Supervised(net), ToyClips(), resume=resume, overwrite=overwrite)
    return net.state_dict()


def test_existing_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    first = _train(tmp_path)
    with pytest.raises(UserError, match=r"already holds a run \(last.pt, metrics.jsonl"
                                         r".*--resume.*--overwrite.*out_dir="):
        _train(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    again = _train(tmp_path, overwrite=True)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 12  # not appended
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the run's files go
    with pytest.raises(UserError, match="exclude each other"):
        _train(tmp_path, resume=True, overwrite=True)


def test_resume_refuses_a_changed_config_but_not_a_safe_key(tmp_path):
    _train(tmp_path, "stop_after=3")
    with pytest.raises(UserError, match=r"optim.lr: 0.1 -> 0.2.*optim.optimizer: 'sgd' -> "):
        _train(tmp_path, "optim.lr=0.2", "optim.optimizer=adamw", resume=True)
    with pytest.raises(UserError, match=r"optim.batch_size: 8 -> 4"):
        _train(tmp_path, "optim.batch_size=4", resume=True)
    with pytest.raises(UserError, match=r"optim.epochs: 2.0 -> 1.0"):
        _train(tmp_path, "optim.epochs=1", resume=True)
    # log_every and stop_after only change how the run is executed
    _train(tmp_path, "log_every=2", resume=True)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 12


def test_a_run_written_before_a_setting_existed_resumes_with_its_default(tmp_path):
    _train(tmp_path, "stop_after=3")
    ckpt = load_checkpoint(tmp_path / "last.pt")
    del ckpt["config"]["data"]["decode_device"]  # as written by a distinit without the key
    torch.save(ckpt, tmp_path / "last.pt")
    _train(tmp_path, resume=True)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 12
    ckpt = load_checkpoint(tmp_path / "last.pt")
    del ckpt["config"]["optim"]["lr"]  # a missing key is its default (0.01), not the run's 0.1
    torch.save(ckpt, tmp_path / "last.pt")
    with pytest.raises(UserError, match=r"optim.lr: 0.01 -> 0.1"):
        _train(tmp_path, resume=True)


def test_resume_without_checkpoint_says_so(tmp_path, capsys):
    _train(tmp_path / "new", resume=True)
    assert "no checkpoint at" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "new" / "last.pt")["step"] == 12


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    _train(tmp_path, "stop_after=5", "ckpt_every=3")  # checkpoints at 3 and 5
    ckpt = load_checkpoint(tmp_path / "last.pt")
    ckpt["step"] = 3  # as if killed at step 5 with the last checkpoint at step 3
    torch.save(ckpt, tmp_path / "last.pt")
    _train(tmp_path, "stop_after=5", "ckpt_every=3", resume=True)
    steps = [int(line.split(",")[0].split(":")[1])
             for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_failed_checkpoint_write_keeps_the_previous_one_and_says_so(tmp_path, monkeypatch):
    _train(tmp_path, "stop_after=2")
    before = (tmp_path / "last.pt").read_bytes()
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(10)}, f)  # half a file on disk, then ENOSPC
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="No space left on device; the previous checkpoint is "
                                        "intact"):
        _train(tmp_path, "stop_after=4", resume=True)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []


def test_unwritable_out_dir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write to out_dir"):
        _train(tmp_path / "file" / "run")


class _Backbone(nn.Module):
    """BN-free, so one batch of 8 and two micro-batches of 4 compute the same gradient."""

    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.net = toy_net()[:-1]

    def forward_features(self, x):
        return self.net(x)


def _distill_toy(out, *extra):
    torch.manual_seed(0)
    net = MultiHeadStudent(_Backbone(), [5])
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    with torch.no_grad():
        teacher[1].weight.mul_(20)  # confident on some frames, unsure on others
    method = DistInit(net, [teacher.eval()], [1.0], [0.5] * 3, [0.25] * 3, frames="random",
                      max_entropy=1.0)
    cfg = load_config(None, [*ARGS, f"out_dir={out}", *extra])
    logs = train(cfg, method, ToyClips())
    return net.state_dict(), logs


def test_entropy_filtered_loss_is_a_mean_over_the_global_batch(tmp_path):
    whole, logs = _distill_toy(tmp_path / "a")
    micro, _ = _distill_toy(tmp_path / "b", "optim.batch_size=4", "optim.accum_steps=2")
    assert 0 < logs["dropped_t0"] < 1  # the filter keeps some, drops others
    for k in whole:
        assert torch.allclose(whole[k], micro[k], atol=1e-6), k


# ---- through the CLI on the tiny synthetic world ---------------------------------------------

SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=36",
         "data.crop=32", "data.num_workers=0", "data.num_test_clips=2", "optim.batch_size=4",
         "optim.epochs=2", "log_every=1"]


def _model(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_and_results(world, teacher_file, tmp_path, labeled):
    teachers = f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]'
    for name in ("d1", "d2"):
        torch.manual_seed(len(name) * 7 + ord(name[1]))  # whatever ran before must not matter
        assert main(["distill", *SMALL, teachers, f"data.videos={world.corpus_dir}",
                     f"out_dir={tmp_path / name}"]) == 0
    assert _same(_model(tmp_path / "d1"), _model(tmp_path / "d2"))
    for name in ("f1", "f2"):
        torch.rand(ord(name[1]))
        assert main(["finetune", *SMALL, *labeled, "seed=3",
                     f"out_dir={tmp_path / name}"]) == 0
    assert _same(_model(tmp_path / "f1"), _model(tmp_path / "f2"))
    assert (tmp_path / "f1" / "results.json").read_text() == \
        (tmp_path / "f2" / "results.json").read_text()
    assert main(["finetune", *SMALL, *labeled, "seed=4", f"out_dir={tmp_path / 'f3'}"]) == 0
    assert not _same(_model(tmp_path / "f1"), _model(tmp_path / "f3"))  # the seed matters


def test_demo_teacher_is_the_same_for_the_same_seed(world, tmp_path):
    from distinit.experiments.runner import run_stage
    from distinit.experiments.world import image_stage, parse_demo

    demo = parse_demo(["size=tiny", "teacher=[optim.epochs=1, optim.batch_size=8, model.width=8]"])
    nets = []
    for name in ("a", "b"):
        torch.rand(3 if name == "a" else 5)
        done = run_stage(image_stage(demo, world, tmp_path / name, "teacher"))
        nets.append(torch.load(done.weights, weights_only=True)["model"])
    assert _same(*nets)


def _signal_run(labeled, tmp_path, signum, workers):
    """Start a finetune in its own process group, signal it once it has logged a step."""
    out = tmp_path / "signalled"
    args = [*SMALL, *labeled, "optim.epochs=40", f"data.num_workers={workers}",
            "ckpt_every=1000"]
    proc = subprocess.Popen([sys.executable, "-m", "distinit.cli", "finetune", *args,
                             f"out_dir={out}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3) \
            and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signum)  # like a terminal's Ctrl-C: workers get it too
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, out, args


@pytest.mark.slow
@pytest.mark.parametrize("signum,workers", [(signal.SIGTERM, 0), (signal.SIGINT, 2)])
def test_signal_writes_a_checkpoint_and_resume_equals_uninterrupted(labeled, tmp_path, signum,
                                                                   workers):
    code, err, out, args = _signal_run(labeled, tmp_path, signum, workers)
    name = signal.Signals(signum).name
    assert code == 128 + signum, err
    assert f"stopped by {name} at step" in err and "--resume" in err
    assert "Traceback" not in err
    step = load_checkpoint(out / "last.pt")["step"]
    assert 0 < step < 40 * 4  # stopped mid-run, checkpoint at the step it stopped
    assert main(["finetune", *args, f"out_dir={out}", "--resume"]) == 0
    assert main(["finetune", *args, f"out_dir={tmp_path / 'straight'}"]) == 0
    assert _same(_model(out), _model(tmp_path / "straight"))
    assert (out / "results.json").read_text() == (tmp_path / "straight" / "results.json").read_text()


def test_inputs_are_normalised_the_way_the_initial_weights_expect(tmp_path, teacher_file):
    from distinit.build import resolve_normalization
    from distinit.config import KINETICS_MEAN

    inflate = load_config(None, ["model.init=inflate", f"model.weights={teacher_file}"])
    assert resolve_normalization(inflate).data.mean == [0.5] * 3  # the 2D model's own
    torchvision_file = tmp_path / "resnet18.pth"
    torch.save(toy_net().state_dict(), torchvision_file)  # a plain state dict: ImageNet's
    plain = load_config(None, ["model.init=inflate", f"model.weights={torchvision_file}"])
    assert resolve_normalization(plain).data.mean == pytest.approx([0.485, 0.456, 0.406])
    _train(tmp_path / "run", "data.mean=[0.1,0.2,0.3]", "data.std=[1,1,1]")
    ckpt = load_config(None, ["model.init=checkpoint", f"model.weights={tmp_path}/run/last.pt"])
    assert resolve_normalization(ckpt, ckpt.model.weights).data.mean == [0.1, 0.2, 0.3]
    assert resolve_normalization(load_config(None, [])).data.mean == KINETICS_MEAN
    explicit = load_config(None, ["model.init=inflate", f"model.weights={teacher_file}",
                                  "data.mean=[0.4,0.4,0.4]", "data.std=[0.2,0.2,0.2]"])
    assert resolve_normalization(explicit).data.mean == [0.4] * 3  # what the user set wins
