"""The Markdown report, written again (atomically) after every part."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .constants import GRAD_TOL, LOSS_TOL
from .plan import Part
from .text import md_cell


class Report:
    def __init__(self, path: Path, args, t0: float, ctx: dict):
        self.path, self.args, self.t0, self.ctx = path, args, t0, ctx
        self.results: list[tuple[Part, dict, float]] = []
        self.done = False

    def add(self, part: Part, result: dict, seconds: float) -> None:
        self.results.append((part, result, seconds))
        self.write()

    def finish(self) -> None:
        self.done = True
        self.write()

    def summary_lines(self) -> list[str]:
        return [f"[{r['status']}] {p.key}: {r['summary']}" for p, r, _ in self.results]

    def write(self) -> None:
        a, ctx = self.args, self.ctx
        wall = time.time() - self.t0
        mode = ("dry run on the CPU (tiny sizes; CUDA-only parts reported skipped)"
                if a.dry_run else f"GPU run on {ctx['device']}")
        state = "finished" if self.done else "IN PROGRESS (the call may have been cut short)"
        lines = [
            "# distinit GPU check", "",
            f"- mode: {mode}",
            f"- {state}: {wall:.0f} s of the {a.budget_s:g} s budget (--budget-s), started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(self.t0))} UTC",
            f"- command: `bash scripts/gpu_check.sh {' '.join(sys.argv[1:])}`",
            f"- videos: {ctx['video_note']}",
            f"- wheels: {ctx['wheels_note']}",
            "", "## Summary", "",
            "| part | result | seconds | summary |", "|---|---|---|---|",
        ]
        for p, r, s in self.results:
            lines.append(f"| {p.key} | {r['status']} | {s:.1f} | {md_cell(r['summary'])} |")
        lines += ["", "Summary lines:", "", "```", *self.summary_lines(), "```"]
        section = None
        for p, r, s in self.results:
            if p.section != section:
                section = p.section
                lines += ["", f"## {section}"]
            lines += ["", f"### {p.heading(a.dry_run)}: {r['status']} ({s:.1f} s)", "",
                      f"**{r['status']}**: {r['summary']}"]
            if r.get("lines"):
                lines += ["", *r["lines"]]
        lines += ["", "## Notes", "", *NOTES]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)


NOTES = [
    "- Each part ran in a process of its own with its own time limit; TIMEOUT means it was "
    "stopped at that limit, ERROR that it raised (its last line is shown), FAIL that a check "
    "did not hold, SKIPPED why it did not run.",
    "- The bf16 check compares one step of R(2+1)D-18 under bf16 autocast in channels_last_3d "
    "(through distinit's Runtime) with the same step in fp32 with TF32 off; tolerances: loss "
    f"within {100 * LOSS_TOL:g}%, global gradient norm within {100 * GRAD_TOL:g}%.",
    "- bench's GPU idle share is its 'waiting on data' column (the share of step time spent "
    "waiting for the loader) on the end-to-end rows; nvidia-smi utilisation, sampled every "
    "250 ms, covers the whole bench process, set-up included.",
    "- Logs of every part are copied next to the report (REPORT_logs/).",
]
