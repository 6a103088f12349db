"""The training loop: exact resume, and two-process DDP equal to one process."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from toy import ToyClips, toy_net

from distinit.config import load_config
from distinit.engine.checkpoint import load_checkpoint
from distinit.engine.method import Method
from distinit.engine.sampler import StreamSampler
from distinit.engine.train import lr_factor, train
from distinit.errors import UserError
from distinit.methods.supervised import Supervised

ARGS = ["precision=fp32", "channels_last=off", "data.num_workers=0", "optim.epochs=3",
        "optim.batch_size=8", "optim.lr=0.1", "optim.schedule=cosine", "optim.warmup_epochs=1",
        "log_every=1", "ckpt_every=100"]


def _run(out, *extra, resume=False):
    cfg = load_config(None, [*ARGS, f"out_dir={out}", *extra])
    net = toy_net()
    train(cfg, Supervised(net), ToyClips(), resume=resume)
    return net.state_dict()


def test_resume_continues_exactly(tmp_path):
    straight = _run(tmp_path / "a")  # 48 / 8 = 6 steps per epoch, 18 steps
    _run(tmp_path / "b", "stop_after=9")  # stops mid-epoch 1
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 9
    resumed = _run(tmp_path / "b", resume=True)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    assert (tmp_path / "b" / "config.yaml").is_file()
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 18  # 9 before the stop, 9 after


def test_one_process_with_accumulation_sees_the_micro_batches_of_two():
    one = list(StreamSampler(20, 2, seed=1, accum_steps=2))
    r0 = list(StreamSampler(20, 2, seed=1, rank=0, world=2))
    r1 = list(StreamSampler(20, 2, seed=1, rank=1, world=2))
    # step s: one process's micro-batches 0 and 1 are rank 0's and rank 1's batch
    assert one == [i for s in range(5) for i in r0[2 * s:2 * s + 2] + r1[2 * s:2 * s + 2]]
    assert sorted(one) == list(range(20))  # one pass: every item once


def test_sampler_resumes_mid_epoch_and_spans_passes():
    s = StreamSampler(10, 3, seed=2, epoch_size=25)  # 8 steps of 3 from a stream of passes
    assert s.steps_per_epoch == 8 and len(s) == 24
    epoch0 = list(s)
    assert len(set(epoch0)) == 24  # items of passes 0, 1, 2 are distinct stream items
    assert sorted({i % 10 for i in epoch0}) == list(range(10))
    assert [i // 10 for i in epoch0] == sorted(i // 10 for i in epoch0)  # passes in order
    s.set_step(5)
    assert list(s) == epoch0[15:] and len(s) == 9
    s.set_step(8)  # epoch 1 starts at stream position 25, not 24
    epoch1 = list(s)
    assert epoch1[:5] == list(StreamSampler(10, 1, seed=2, epoch_size=30))[25:30]


def test_lr_schedule_warmup_step_and_cosine():
    cfg = load_config(None, ["optim.warmup_epochs=1", "optim.step_epochs=2", "optim.gamma=0.1"]).optim
    assert lr_factor(0, 10, 100, cfg) == 0.1 and lr_factor(9, 10, 100, cfg) == 1.0
    assert lr_factor(19, 10, 100, cfg) == 1.0 and abs(lr_factor(20, 10, 100, cfg) - 0.1) < 1e-12
    cfg.schedule = "cosine"
    assert lr_factor(10, 10, 100, cfg) == 1.0 and lr_factor(100, 10, 100, cfg) < 1e-12


def test_two_process_ddp_matches_one_process(tmp_path):
    one = _run(tmp_path / "one")
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from toy import ToyClips, toy_net
        from distinit.config import load_config
        from distinit.methods.supervised import Supervised
        from distinit.engine.train import train
        cfg = load_config(None, {ARGS!r} + ["optim.batch_size=4", "out_dir={tmp_path / 'two'}"])
        train(cfg, Supervised(toy_net()), ToyClips())
        # as the CLI leaves a torchrun process: gloo threads torn down at interpreter
        # finalization can abort a rank that finished (distinit.cli.entry)
        import os
        from distinit.engine import dist
        dist.cleanup()
        sys.stdout.flush()
        os._exit(0)
    '''))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node=2", str(script)], check=True, env=env, timeout=300)
    two = load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5), k


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    class Bad(Method):
        def __init__(self):
            super().__init__(toy_net())

        def forward(self, batch):
            return {"loss": self.trainable(batch["video"]).sum() * float("nan")}

    with pytest.raises(UserError, match="not finite at step 0"):
        train(load_config(None, [*ARGS, f"out_dir={tmp_path}"]), Bad(), ToyClips())


class _WorkerPids(ToyClips):
    """Each item says which process made it."""

    def __getitem__(self, item):
        return {**super().__getitem__(item), "pid": os.getpid()}


class _Recorder(Supervised):
    def __init__(self, net):
        super().__init__(net)
        self.pids = set()

    def forward(self, batch):
        self.pids.update(batch["pid"].tolist())
        return super().forward(batch)


def test_loader_workers_last_the_whole_run_and_match_in_process_loading(tmp_path):
    """One worker serves all 3 epochs (a memory cache in it lasts), and the run is the same as
    one loading in the main process."""
    cfg = load_config(None, [*ARGS, f"out_dir={tmp_path / 'w'}", "data.num_workers=1"])
    net = toy_net()
    method = _Recorder(net)
    train(cfg, method, _WorkerPids())
    assert len(method.pids) == 1 and os.getpid() not in method.pids
    in_process = _run(tmp_path / "p")
    for k, v in net.state_dict().items():
        assert torch.equal(v, in_process[k]), k
