"""`distinit real-demo`'s training: one call of the distill job per epoch, each continuing the
last exactly and measured on the held-out segments, and continued after a stop.

The job runs as an experiment stage (`runner.run_stage`): a run with a checkpoint continues
from it, a finished one is only reloaded, so the demo run again after Ctrl-C, SIGTERM or a crash
picks up where it stopped and ends with the report an uninterrupted run gives. The held-out
check of every finished epoch is kept in OUT/curve.json, since the checkpoint it was measured
on is overwritten by the next epoch's.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import torch

from distinit.config import Config
from distinit.engine.checkpoint import load_checkpoint
from distinit.engine.interrupt import Interrupted, signal_name
from distinit.errors import UserError
from distinit.experiments.runner import Stage, run_stage


class Check(Protocol):
    """What is measured after each epoch (`real.HeldOut`)."""

    def student(self, cfg: Config, checkpoint: Path) -> torch.Tensor: ...

    def agreement(self, predictions: torch.Tensor) -> float: ...


def epoch_ends(cfg: Config, num_videos: int) -> list[int]:
    """The optimizer step at the end of every epoch (one process), the last the run's end."""
    o = cfg.optim
    per_epoch = (o.epoch_size or num_videos) // (o.batch_size * o.accum_steps)
    if per_epoch == 0:
        raise UserError(f"an epoch of {o.epoch_size or num_videos} clips is less than one step of "
                        f"{o.batch_size * o.accum_steps}: raise optim.epoch_size")
    total = max(1, round(o.epochs * per_epoch))
    return sorted({min(total, e * per_epoch) for e in range(1, math.ceil(total / per_epoch) + 1)})


class Curve:
    """The held-out check of every finished epoch, kept in OUT/curve.json with the settings of
    the segments the run trains on, so that the command run again after a stop reports the
    epochs measured before it (their checkpoints are gone: `last.pt` moved on)."""

    def __init__(self, path: Path, run: Path, segments: dict, overwrite: bool):
        self.path, self.segments = path, segments
        ckpt = run / "last.pt"
        # mmap: only the step is read, not the weights.
        self.step = (load_checkpoint(ckpt, mmap=True)["step"] if ckpt.is_file() and not overwrite
                     else 0)
        saved = json.loads(path.read_text()) if self.step and path.is_file() else {}
        if self.step and saved.get("segments") != segments:
            raise UserError(f"{run} holds a run on other segments (or one {path} does not "
                            "record); add --overwrite to train it again, or choose another "
                            "out_dir=")
        # Epochs measured after the checkpoint (a kill between the two) are measured again.
        self.epochs = [e for e in saved.get("curve", []) if e["step"] <= self.step]
        self.save()

    def get(self, step: int) -> dict | None:
        return next((e for e in self.epochs if e["step"] == step), None)

    def add(self, entry: dict) -> None:
        self.epochs.append(entry)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"segments": self.segments, "curve": self.epochs}, indent=2))
        tmp.replace(self.path)


def logged_loss(run: Path, step: int) -> float:
    """The training loss the run logged at `step` (the loop logs every stop's last step)."""
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill
            rows.append(json.loads(line))
    return next((r["loss"] for r in reversed(rows) if r.get("step") == step and "loss" in r),
                math.nan)


def stopped(e: Interrupted, run: Path, epoch: int, epochs: int) -> Interrupted:
    """The job's stop in the demo's terms: its line counts steps to this call's `stop_after`,
    the end of one epoch, not of the run. The command line adds what to do next (the same
    command again, `cli.RESUMABLE`)."""
    signum = e.exit_code - 128
    ckpt = run / "last.pt"
    where = (f"at step {load_checkpoint(ckpt, mmap=True)['step']} (checkpoint in {run})"
             if ckpt.is_file() else "before its first checkpoint")
    return Interrupted(f"stopped by {signal_name(signum)} in epoch {epoch} of {epochs}, {where}",
                       signum)


def train_epochs(stage: Stage, cfg: Config, ends: list[int], held: Check, curve: Curve,
                 overwrite: bool) -> torch.Tensor:
    """Train to the end of every epoch not yet measured, one call of the job per epoch, each
    continuing the last exactly (`runner.run_stage`: a stopped run continues from its
    checkpoint, a finished one is only reloaded), and measure it; returns the final student's
    top class on each held-out clip."""
    run = Path(cfg.out_dir)
    predictions = None
    for k, end in enumerate(ends):
        entry, final = curve.get(end), k == len(ends) - 1
        if entry is None and curve.step > end:
            raise UserError(f"{curve.path} lacks epoch {k + 1}, whose checkpoint is gone; add "
                            "--overwrite to train the run again")
        if entry is not None and not final:
            continue
        # The final epoch is always run: a finished run is reloaded, which also builds what
        # it reads (the target cache) if a work_dir was removed since.
        try:
            run_stage(replace(stage, overrides=(*stage.overrides, f"stop_after={end}")),
                      overwrite=overwrite and k == 0)
        except Interrupted as e:
            raise stopped(e, run, k + 1, len(ends)) from None
        predictions = held.student(cfg, run / "last.pt")
        if entry is None:
            curve.add({"epoch": k + 1, "step": end,
                       "train_loss": round(logged_loss(run, end), 4),
                       "agreement": round(held.agreement(predictions), 2),
                       "student_classes": len(set(predictions.tolist()))})  # 1: the prior only
            print(f"epoch {k + 1}: held-out agreement {curve.epochs[-1]['agreement']:.1f}%",
                  flush=True)
    return predictions
