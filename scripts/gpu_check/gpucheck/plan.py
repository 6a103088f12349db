"""The parts of the check, in order of priority, with their sections and time limits."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Part:
    key: str
    section: str
    title: str
    kind: str  # the function that runs it: part_<kind> (child.py)
    budget: int  # seconds at most on the GPU
    dry_budget: int  # seconds at most in --dry-run
    min_s: int = 15  # not started with less time than this left
    args: dict = field(default_factory=dict)
    dry_skip: str = ""  # why --dry-run does not run it ("" = it runs)
    dry_title: str = ""  # its title in --dry-run, where that differs

    def heading(self, dry_run: bool) -> str:
        return self.dry_title if dry_run and self.dry_title else self.title


ENV, CORRECT, SPEED = "1. Environment", "2. Correctness", "3. Speed"
# In order of priority: when the deadline comes, the parts at the end are the ones skipped.
PARTS = [
    Part("env", ENV, "environment", "env", 45, 60, 10),
    Part("amp", CORRECT, "2a. bf16 autocast + channels_last_3d step vs fp32", "amp", 60, 60),
    Part("ddp", CORRECT, "2b. NCCL process group + DDP step", "ddp", 60, 60),
    Part("cli", CORRECT, "2c. distill / finetune / --resume through the CLI", "cli", 150, 150, 30),
    Part("bench_b64", SPEED, "3a. bench full, batch 64, compile off", "bench", 150, 90, 45,
         {"batch": 64, "compile": False},
         dry_title="3a. bench (dry run: --preset demo, batch 4, 1 worker, CPU)"),
    Part("bench_b16", SPEED, "3b. bench full, batch 16, compile off", "bench", 90, 40, 30,
         {"batch": 16, "compile": False}, "dry run: one bench configuration stands in for "
         "the batch sweep"),
    Part("bench_b64_compile", SPEED, "3c. bench full, batch 64, torch.compile on", "bench",
         180, 60, 90, {"batch": 64, "compile": True},
         "dry run: torch.compile takes minutes on a CPU; it runs on the GPU only"),
    Part("decode", SPEED, "3d. single-process decoding, torchcodec GPU decoder", "decode", 45,
         60),
    Part("bench_b32", SPEED, "3e. bench full, batch 32, compile off", "bench", 90, 40, 30,
         {"batch": 32, "compile": False}, "dry run: one bench configuration stands in for "
         "the batch sweep"),
]
