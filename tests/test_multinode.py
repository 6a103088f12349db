"""Many machines, on one: two torchrun agents ("nodes") on 127.0.0.1 that meet through c10d
rendezvous, as `scripts/slurm/` starts them on a cluster.

- They distill to the same parameters as one process with gradient accumulation.
- When one node dies (its agent and its worker killed with SIGKILL), the other stops within a
  bounded time with one line naming the lost rank. The last checkpoint stays whole, and the same
  command with `--resume auto` finishes to the run's uninterrupted weights, bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_ddp import ARGS, _assert_close

from distinit.cli import main
from distinit.engine.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agents(args: list[str], logs: Path, nodes: int = 2) -> list[subprocess.Popen]:
    """One torchrun agent per "node", each with one worker, meeting at a c10d endpoint; each in
    a session of its own, so a test can kill one node whole."""
    endpoint, run_id = f"127.0.0.1:{_free_port()}", f"t{os.getpid()}{time.monotonic_ns()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for node in range(nodes):
        out = (logs / f"node{node}.log").open("w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
             "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
             f"--rdzv-id={run_id}", "--max-restarts=0", "-m", "distinit.cli", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        if node == 0:
            time.sleep(1.0)  # the first agent hosts the rendezvous store
    return procs


def _wait(procs: list[subprocess.Popen], logs: Path, timeout: float = 600) -> None:
    for i, p in enumerate(procs):
        code = p.wait(timeout=timeout)
        assert code == 0, (logs / f"node{i}.log").read_text()[-3000:]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (a torchrun worker runs in a session of its own, so killing the
    agent's group would leave it running, as a dead node would not)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_node(agent: subprocess.Popen) -> None:
    for pid in [agent.pid, *_descendants(agent.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    agent.wait()


def _distill(world, teacher_file) -> list[str]:
    teachers = f'distill.teachers=[{{spec: "ckpt:{teacher_file}"}}]'
    # No entropy filter: every clip's target counts, so the loss is never zero and the weights
    # the comparisons check really move.
    return ["distill", *ARGS, teachers, f"data.videos={world.corpus_dir}", "distill.frames=multi",
            "distill.num_frames=2", "distill.temperature=0.5"]


def _learnt(run: Path) -> None:
    losses = [json.loads(line).get("loss") for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses and all(loss > 0 for loss in losses), losses


def _trained(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model"]


@pytest.mark.slow
def test_two_nodes_distill_to_the_parameters_of_one_process(world, teacher_file, tmp_path):
    distill = _distill(world, teacher_file)
    assert main([*distill, "optim.accum_steps=2", f"out_dir={tmp_path / 'one'}"]) == 0
    procs = _agents([*distill, f"out_dir={tmp_path / 'two'}"], tmp_path / "logs")
    _wait(procs, tmp_path / "logs")
    _learnt(tmp_path / "two")
    one, two = _trained(tmp_path / "one"), _trained(tmp_path / "two")
    # Batch-norm running statistics are each process's own (docs/RUNS.md): parameters only.
    _assert_close({k: v for k, v in one.items() if "running" not in k and "num_batches" not in k},
                  {k: v for k, v in two.items() if "running" not in k and "num_batches" not in k})
    rngs = load_checkpoint(tmp_path / "two" / "last.pt")["rng"]
    assert len(rngs) == 2  # one per rank, across the two nodes


def _steps(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    return max((json.loads(line)["step"] for line in lines if line.strip()), default=0)


@pytest.mark.slow
def test_a_dead_node_stops_the_job_with_one_line_and_it_resumes_bitwise(world, teacher_file,
                                                                        tmp_path):
    run = [*_distill(world, teacher_file), "optim.epochs=6", "ckpt_every=2", "dist_timeout=60"]
    whole = _agents([*run, f"out_dir={tmp_path / 'whole'}"], tmp_path / "whole_logs")
    _wait(whole, tmp_path / "whole_logs")
    total = load_checkpoint(tmp_path / "whole" / "last.pt")["step"]
    _learnt(tmp_path / "whole")

    out, logs = tmp_path / "cut", tmp_path / "cut_logs"
    procs = _agents([*run, f"out_dir={out}"], logs)
    deadline = time.monotonic() + 300
    while _steps(out) < 3 and time.monotonic() < deadline and procs[1].poll() is None:
        time.sleep(0.02)
    assert 3 <= _steps(out) < total, "the run ended before the node could be killed"
    killed = time.monotonic()
    _kill_node(procs[1])
    code = procs[0].wait(timeout=120)
    took = time.monotonic() - killed
    text = (logs / "node0.log").read_text()
    assert code != 0 and took < 60, (took, text[-2000:])
    lines = [line for line in text.splitlines() if "lost rank" in line]
    assert lines and all("distinit distill: error: lost rank" in line for line in lines), text[-3000:]
    assert "--resume auto" in lines[0] and "intact" in lines[0]
    saved = load_checkpoint(out / "last.pt")  # whole: it loads, at a checkpoint step
    assert 2 <= saved["step"] < total and saved["step"] % 2 == 0

    again = _agents([*run, f"out_dir={out}", "--resume", "auto"], tmp_path / "again_logs")
    _wait(again, tmp_path / "again_logs")
    done, reference = _trained(out), _trained(tmp_path / "whole")
    assert load_checkpoint(out / "last.pt")["step"] == total
    assert done.keys() == reference.keys()
    assert all(torch.equal(done[k], reference[k]) for k in done), "the resumed run differs"


def test_resume_auto_is_resume_and_only_takes_the_word_after_it():
    from distinit.jobs.run import _resume_auto

    assert _resume_auto(["--resume", "auto", "a.yaml"]) == ["--resume", "a.yaml"]
    assert _resume_auto(["--resume=auto", "x=1"]) == ["--resume", "x=1"]
    assert _resume_auto(["--resume", "a.yaml", "auto"]) == ["--resume", "a.yaml", "auto"]
