"""The `distinit` command: one subcommand per job, each a `main(argv)` function."""

from __future__ import annotations

import importlib
import os
import sys

from distinit.engine.interrupt import Interrupted
from distinit.errors import UserError, one_line

# Subcommands are imported lazily so `distinit check-videos` does not pay for model imports.
COMMANDS = {
    "synth": ("distinit.data.synth.cli", "Write the synthetic world (stills, unlabeled corpus, action set)."),
    "prepare": ("distinit.data.labels.prepare", "Unpack, check and re-encode HMDB-51, UCF-101 or Kinetics as downloaded; write a manifest."),
    "check-videos": ("distinit.data.video.check", "List every video under a folder or list that fails to decode."),
    "reencode": ("distinit.data.video.reencode", "Re-encode a dataset with short keyframe intervals or to frame folders."),
    "flow": ("distinit.data.flow.compute", "Dense optical flow (OpenCV DIS, Farneback, TV-L1; RAFT from torchvision) for a folder or list of videos."),
    "cache-targets": ("distinit.targets.cache", "Run the teachers once over the corpus and store their logits (distill.target_cache)."),
    "store-clips": ("distinit.jobs.store_clips", "Decode every video once, resized to data.resize, into memory-mapped uint8 shards (data.cache=store)."),
    "check-store": ("distinit.data.stores.check", "Check every shard of a target cache or clip store (or a cache_dir of them) against its checksum."),
    "train-image": ("distinit.jobs.image_train", "Train a 2D image classifier on stills (a teacher, or weights to inflate)."),
    "pretrain": ("distinit.jobs.run", "Pretrain a video student with a registered method: pretrain METHOD CONFIG.yaml."),
    "distill": ("distinit.jobs.run", "Distill still-image teachers into a video student (DistInit)."),
    "chain": ("distinit.experiments.chain", "Run stages one after another from one file (e.g. auxskd -> vspp -> finetune)."),
    "finetune": ("distinit.jobs.run", "Fine-tune (or linear-probe) a student on a labeled split."),
    "eval": ("distinit.jobs.run", "Evaluate a fine-tuned student: clip and video accuracy."),
    "fuse": ("distinit.jobs.evaluate", "Late fusion of fine-tuned runs (two-stream RGB + flow): video accuracy."),
    "export": ("distinit.jobs.export", "Write a run's weights as .safetensors (loads without unpickling; model.weights=FILE)."),
    "extract-features": ("distinit.jobs.features", "Write pooled student features for every video in a folder."),
    "demo": ("distinit.experiments.demo", "Reproduce the paper's Table 1 on the synthetic world."),
    "real-demo": ("distinit.experiments.real", "DistInit on real footage: EfficientNet-Lite0 (ImageNet) into a small R(2+1)D, held-out agreement vs majority."),
    "reproduce": ("distinit.experiments.reproduce", "One of the paper's ablations on the synthetic world, over seeds."),
    "bench": ("distinit.tools.bench", "Throughput and memory of each stage: data, student, teacher, live vs cached distill, naive baseline."),
    "plan": ("distinit.tools.plan", "What a config's run costs before it runs: steps, FLOPs, GPU-hours, clip store and target cache sizes."),
    "figures": ("distinit.tools.figures", "Figures of demo runs: conv1 filters, t-SNE, entropy histogram, per-class gain, curves."),
}

# What an interrupted command can continue from, for those that can (the message after Ctrl-C).
RESUMABLE = {
    **dict.fromkeys(("pretrain", "distill", "finetune", "train-image"),
                    "checkpoints already written are intact; continue with --resume"),
    **dict.fromkeys(("chain", "demo", "reproduce"),
                    "finished stages are kept; run the same command again to continue"),
    "prepare": "unpacked archives and checked videos are kept in OUT/.prepare; run the same "
               "command again to continue",
    "real-demo": "segments, teacher targets and the last checkpoint are kept; run the same "
                 "command again to continue",
}


def _usage() -> str:
    lines = ["usage: distinit COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<18}{doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"distinit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    ok = False
    try:
        module = importlib.import_module(COMMANDS[name][0])
        # Modules serving several commands take the command name first.
        if hasattr(module, "COMMANDS"):
            code = module.main([name, *rest]) or 0
        else:
            code = module.main(rest) or 0
        ok = True
        return code
    except KeyboardInterrupt:  # outside a training loop (which stops at a step by itself)
        then = RESUMABLE.get(name, "files already written are intact")
        print(f"distinit {name}: interrupted; {then}", file=sys.stderr)
        return 130
    except UserError as e:
        message = f"distinit {name}: error: {one_line(e)}"
        if isinstance(e, Interrupted) and name in RESUMABLE:  # stopped on a signal
            message = f"{message}; {RESUMABLE[name]}"
        # A file name that is not UTF-8 must not turn the message into a UnicodeEncodeError.
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        print(message.encode(encoding, "backslashreplace").decode(encoding), file=sys.stderr)
        return getattr(e, "exit_code", 2)
    finally:
        # Leave a torchrun process group (a gloo group alive at exit can abort the process);
        # looked up, not imported, so commands that never load torch stay fast.
        dist = sys.modules.get("distinit.engine.dist")
        if dist is not None:
            dist.cleanup(wait=ok)


def entry() -> None:
    """The console script. Under torchrun a process leaves without interpreter finalization once
    `main` has closed its files and left the process group: gloo's C++ worker threads can still
    be torn down during finalization, which aborts the process ("terminate called without an
    active exception") after a run that succeeded. Seen in CI on torch 2.13 CPU."""
    code = main()
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
