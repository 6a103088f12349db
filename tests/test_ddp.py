"""Two gloo processes through the CLI train the same weights as one process with the same global
batch (batch 4 x 2 processes = batch 4 x accum_steps 2), for every method the loop runs."""

import json
import os
import subprocess
import sys

import pytest
import torch
from test_runs import SMALL

from distinit.cli import main
from distinit.engine.checkpoint import load_checkpoint

# fp32: the comparison is of gradient arithmetic, not of bf16 rounding
ARGS = [*SMALL, "precision=fp32", "channels_last=off", "optim.optimizer=sgd", "optim.lr=0.05"]


def _torchrun(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "-m", "distinit.cli", *args],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args[0]}: {proc.stdout[-1500:]}\n{proc.stderr[:3000]}"


def _params(run_dir, net):
    """Trainable parameters only: each process keeps its own batch-norm running statistics
    (no SyncBatchNorm on CPU), and DDP saves rank 0's."""
    state = load_checkpoint(run_dir / "last.pt")["model"]
    names = {n for n, _ in net.named_parameters()}
    return {k: v for k, v in state.items() if k in names}


def _assert_close(one, two):
    assert one.keys() == two.keys() and one
    for k in one:
        assert torch.allclose(one[k], two[k], atol=2e-5, rtol=1e-4), k


@pytest.mark.slow
def test_distill_finetune_and_probe_two_processes_equal_one(world, teacher_file, labeled,
                                                            tmp_path):
    from distinit.build import make_student
    from distinit.config import load_config

    teachers = f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]'
    distill = [*ARGS, teachers, f"data.videos={world.corpus_dir}", "distill.frames=multi",
               "distill.num_frames=2", "distill.temperature=0.5"]  # no entropy filter: the
    # untrained teacher's targets are all above any useful bound, and a filter that drops every
    # clip leaves a loss of 0 and weights that only decay
    assert main(["distill", *distill, "optim.accum_steps=2", f"out_dir={tmp_path / 'd1'}"]) == 0
    _torchrun("distill", *distill, f"out_dir={tmp_path / 'd2'}")
    losses = [json.loads(line)["loss"] for line in
              (tmp_path / "d2" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses and min(losses) > 0  # the weights compared below were trained
    backbone = make_student(load_config(None, ARGS).model, num_classes=0)
    one = {k: v for k, v in load_checkpoint(tmp_path / "d1" / "last.pt")["model"].items()
           if k.startswith("heads.") or k.removeprefix("backbone.") in
           {n for n, _ in backbone.named_parameters()}}
    two = {k: v for k, v in load_checkpoint(tmp_path / "d2" / "last.pt")["model"].items()
           if k in one}
    _assert_close(one, two)
    assert not any(k.startswith("backbone.fc") for k in one)  # no unused classifier
    rngs = load_checkpoint(tmp_path / "d2" / "last.pt")["rng"]  # every rank's, in rank order
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])

    student = make_student(load_config(None, ARGS).model, num_classes=len(world.action_classes))
    for probe in ("false", "true"):
        ft = [*ARGS, *labeled, "model.init=checkpoint",
              f"model.weights={tmp_path / 'd1' / 'last.pt'}", f"model.linear_probe={probe}"]
        assert main(["finetune", *ft, "optim.accum_steps=2",
                     f"out_dir={tmp_path / f'f1{probe}'}"]) == 0
        _torchrun("finetune", *ft, f"out_dir={tmp_path / f'f2{probe}'}")
        _assert_close(_params(tmp_path / f"f1{probe}", student),
                      _params(tmp_path / f"f2{probe}", student))
