"""2c. `distinit distill` and `distinit finetune` through the CLI, each stopped after 2 steps
(stop_after=2) and finished with --resume (the dry run: distill only, finetune run once)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .constants import FAIL, PASS
from .result_file import progress
from .run_distinit import cli_failure, run_cmd


def part_cli(ctx: dict) -> dict:
    import torch

    from distinit.data.synth import load_world
    from distinit.engine.checkpoint import load_checkpoint
    from distinit.models.image_resnet import build_image_model
    from distinit.models.teachers import teacher_checkpoint

    if ctx["video_io"] == "none":
        return {"status": FAIL, "summary": f"no way to read videos: {ctx['video_note']}",
                "lines": []}
    work = Path(ctx["work"]) / "cli"
    work.mkdir(parents=True, exist_ok=True)
    lines = []
    if ctx["world"]:
        root = Path(ctx["world"])
        lines.append(f"- world: {root} (given with --world)")
    else:
        root = work / "world"
        t = time.time()
        rc, text = run_cmd(ctx, ["synth", str(root), "--seed", "0", "--size", "tiny",
                                 "--workers", "2", "--quiet"], "synth")
        if rc:
            return {"status": FAIL, "summary": cli_failure("distinit synth", text), "lines": lines}
        lines.append(f"- world: `distinit synth {root} --seed 0 --size tiny` in "
                     f"{time.time() - t:.1f} s ({ctx['video_io']} video writing)")
    world = load_world(root)
    torch.manual_seed(0)  # an untrained tiny teacher, as tests/conftest.py makes one
    teacher = work / "teacher.pt"
    n = len(world.object_classes)
    torch.save(teacher_checkpoint(build_image_model("resnet_tiny", num_classes=n, width=8),
                                  "resnet_tiny", n, arch_kwargs={"width": 8}, mean=[0.5] * 3,
                                  std=[0.25] * 3), teacher)
    workers = 0 if ctx["dry_run"] else 2
    small = ["model.arch=r2plus1d_18", "model.width=16", "model.layers=[1,1,1,1]",
             "data.resize=36", "data.crop=32", "data.clip_len=8", f"data.num_workers={workers}",
             "data.num_test_clips=2", "optim.batch_size=4", "optim.epochs=2", "log_every=1",
             f"device={ctx['device']}"]
    distill_dir, finetune_dir = work / "distill", work / "finetune"
    runs = {
        "distill": ["distill", *small, f'distill.teachers=[{{spec: "ckpt:{teacher}"}}]',
                    f"data.videos={world.corpus_dir}", "distill.holdout=0",
                    f"out_dir={distill_dir}"],
        "finetune": ["finetune", *small, "data.format=hmdb51",
                     f"data.video_root={world.actions_videos}",
                     f"data.split_dir={world.actions_splits}", "model.init=checkpoint",
                     f"model.weights={distill_dir / 'last.pt'}", f"out_dir={finetune_dir}"],
    }
    lines += [f"- a tiny untrained `ckpt:` teacher (resnet_tiny, width 8, {n} classes); every "
              f"run: `python -m distinit.cli {{distill|finetune}} {' '.join(small)} ...` "
              f"(precision and channels_last: auto)", ""]
    failures = []

    def cli(label: str, args: list[str], log: str) -> str | None:
        """One CLI call: its output, or None with the failure recorded in failures and lines."""
        rc, text = run_cmd(ctx, args, log)
        if rc:
            failures.append(cli_failure(label, text))
            lines.append(f"- {label}: exit code {rc}: {failures[-1]}")
            return None
        return text

    progress(ctx, lines)
    for name, cmd in runs.items():
        progress(ctx, lines)
        out_dir = distill_dir if name == "distill" else finetune_dir
        if ctx["dry_run"] and name == "finetune":  # CI's time: one run (resume: distill's)
            t = time.time()
            if cli(name, cmd, name) is None:
                break
            last = load_checkpoint(out_dir / "last.pt")
            res = json.loads((out_dir / "results.json").read_text())
            lines.append(f"- {name} (dry run: one run, not stopped and resumed): exit 0 in "
                         f"{time.time() - t:.1f} s at step {last['step']} of "
                         f"{last['total_steps']}; results.json top1 {res.get('top1')}")
            if last["step"] != last["total_steps"]:
                failures.append(f"{name} ended at step {last['step']} of {last['total_steps']}")
            continue
        t = time.time()
        if cli(f"{name} stop_after=2", [*cmd, "stop_after=2"], f"{name}_stop") is None:
            break
        first = load_checkpoint(out_dir / "last.pt")
        lines.append(f"- {name} stop_after=2: exit 0 in {time.time() - t:.1f} s, checkpoint at "
                     f"step {first['step']} of {first['total_steps']}")
        progress(ctx, lines)
        if first["step"] != 2:
            failures.append(f"{name} stopped at step {first['step']}, not 2")
        t = time.time()
        text = cli(f"{name} --resume", [*cmd, "--resume"], f"{name}_resume")
        if text is None:
            break
        last = load_checkpoint(out_dir / "last.pt")
        resumed = f"resuming {out_dir / 'last.pt'} at step 2" in text
        steps = [json.loads(x)["step"] for x in
                 (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        lines.append(f"- {name} --resume: exit 0 in {time.time() - t:.1f} s, resumed at step 2: "
                     f"{resumed}, finished at step {last['step']} of {last['total_steps']}; "
                     f"metrics.jsonl steps {steps}")
        if not resumed:
            failures.append(f"{name} --resume did not say it resumed at step 2")
        if last["step"] != last["total_steps"] or last["total_steps"] <= 2:
            failures.append(f"{name} ended at step {last['step']} of {last['total_steps']}")
        if steps != list(range(1, last["total_steps"] + 1)):
            failures.append(f"{name} logged steps {steps}")
        if name == "finetune":
            res = json.loads((out_dir / "results.json").read_text())
            lines.append(f"- finetune results.json: top1 {res.get('top1')}, clip_acc "
                         f"{res.get('clip_acc')} (untrained: only that it is written)")
    if failures:
        return {"status": FAIL, "summary": "; ".join(failures), "lines": lines}
    what = "distill" if ctx["dry_run"] else "distill and finetune"
    return {"status": PASS, "summary": f"{what} on {ctx['device']}: stopped at step 2, resumed "
            "with --resume, finished at the last step; finetune evaluated", "lines": lines}
