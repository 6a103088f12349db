"""3a-3c, 3e. `distinit bench` at one batch size, compile off or on: its table, MFU, the share of
step time spent waiting on data, and GPU utilisation sampled with nvidia-smi."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .constants import DEFAULT_PEAK_TFLOPS, FAIL, PASS
from .result_file import progress
from .run_distinit import cli_failure, run_cmd


class GpuSampler:
    """nvidia-smi's utilisation and memory every 250 ms while a block runs (when it exists)."""

    def __init__(self):
        self.proc, self.rows = None, []

    def __enter__(self):
        smi = shutil.which("nvidia-smi")
        if smi:
            self.proc = subprocess.Popen(
                [smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "250", "-i", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                out, _ = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
            for line in out.splitlines():
                try:
                    util, mem = (float(v) for v in line.split(","))
                    self.rows.append((util, mem))
                except ValueError:
                    continue

    def describe(self) -> str:
        if not self.rows:
            return "nvidia-smi: no samples (not on PATH, or no GPU)"
        utils = [u for u, _ in self.rows]
        idle = sum(u == 0 for u in utils) / len(utils)
        return (f"nvidia-smi over the whole bench process ({len(utils)} samples): mean "
                f"utilisation {sum(utils) / len(utils):.0f}%, {idle:.0%} of samples idle (0%), "
                f"most memory used {max(m for _, m in self.rows):.0f} MiB")


def parse_bench(text: str) -> tuple[dict, float, str]:
    """bench's Markdown: {row label: {column: cell}}, GFLOP per clip, its MFU line."""
    rows, header = {}, []
    for line in text.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "stage":
            header = cells
        elif header:
            rows[cells[0]] = dict(zip(header, cells))
    m = re.search(r"([\d.]+) GFLOP per clip", text)
    mfu = next((x.strip() for x in text.splitlines() if x.startswith("MFU")), "")
    return rows, float(m.group(1)) if m else 0.0, mfu


def clips(rows: dict, label: str) -> float:
    try:
        return float(rows[label]["clips/s"])
    except (KeyError, ValueError):
        return 0.0


def part_bench(ctx: dict, batch: int, compile: bool) -> dict:
    if ctx["video_io"] == "none":
        return {"status": FAIL, "summary": f"no way to read videos: {ctx['video_note']}",
                "lines": []}
    work = Path(ctx["work"]) / "bench"  # shared by every bench part: videos, caches reused
    dry = ctx["dry_run"]
    md = Path(ctx["work"]) / f"bench_{ctx['part']}.md"
    note = ""
    if dry:
        opts = ["--preset", "demo", "--batch", "4", "--workers", "1", "--steps", "1",
                "--warmup", "1", "--rounds", "1", "--num-videos", "8"]
    else:
        workers, note = shm_workers(ctx["bench_workers"], batch)
        opts = ["--preset", "full", "--batch", str(batch), "--workers", str(workers),
                "--steps", "4", "--warmup", "2", "--rounds", "2",
                "--num-videos", str(ctx["bench_videos"])]
    cmd = ["bench", *opts, "--device", ctx["device"], "--work", str(work), "--markdown", str(md)]
    if compile:
        cmd.append("--compile")
    progress(ctx, [f"    distinit {' '.join(cmd)}"])
    with GpuSampler() as sampler:
        rc, text = run_cmd(ctx, cmd, "bench")
    lines = [f"    distinit {' '.join(cmd)}", ""]
    if note:
        lines = [f"- {note}", "", *lines]
    if rc or not md.is_file():
        return {"status": FAIL, "summary": cli_failure("distinit bench", text),
                "lines": lines + [f"    {x}" for x in text.splitlines()[-15:]]}
    table = md.read_text()
    rows, gflop, mfu = parse_bench(table)
    cached, live = clips(rows, "distill, cached targets"), clips(rows, "distill, live teacher")
    if not mfu and gflop and ctx["device"].startswith("cuda"):
        peak = (ctx["peak_tflops"] or DEFAULT_PEAK_TFLOPS) * 1e12
        mfu = (f"MFU of the cached distill step: {100 * cached * gflop * 1e9 / peak:.1f}% of "
               f"{peak / 1e12:.0f} TFLOP/s (computed here from bench's FLOP count; "
               "--peak-tflops)")
    mems = [r.get("peak memory", "") for r in rows.values()]
    waits = {k: r.get("waiting on data", "") for k, r in rows.items()
             if r.get("waiting on data")}
    lines += [table.strip(), "",
              f"- {mfu or 'MFU: n/a (no peak FLOP/s for a CPU)'}",
              "- GPU idle share (bench's 'waiting on data', end-to-end and naive rows): "
              + (", ".join(f"{k}: {v}" for k, v in waits.items()) or "n/a"),
              f"- {sampler.describe()}",
              f"- largest peak memory of a row: {max(mems, key=mem_mib, default='?')}"]
    if not rows or not cached:
        return {"status": FAIL, "summary": "bench wrote no table with a cached distill row",
                "lines": lines}
    return {"status": PASS, "summary": f"cached {cached:.0f} clips/s, live {live:.0f} clips/s, "
            f"e2e cached/store {clips(rows, 'end to end, cached targets, clip store'):.0f} clips/s"
            f"; {mfu.split(':')[-1].strip() if mfu else 'MFU n/a'}", "lines": lines}


def shm_workers(workers: int, batch: int) -> tuple[int, str]:
    """Loader workers whose prefetched batches (4 each, float32 3x8x112x112 clips) fit in
    /dev/shm's free space, at most `workers`; and a note when that is fewer."""
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return workers, ""
    per_worker = 1.5 * 4 * batch * 3 * 8 * 112 * 112 * 4  # bytes, with room to spare
    fit = min(workers, int(free // per_worker))
    if fit >= workers:
        return workers, ""
    return fit, (f"loader workers cut from {workers} to {fit}: /dev/shm has "
                 f"{free / 2**30:.1f} GiB free, each worker's 4 prefetched batches need "
                 f"{per_worker / 2**30:.1f} GiB")


def mem_mib(cell: str) -> float:
    m = re.match(r"([\d.]+) MiB", cell or "")
    return float(m.group(1)) if m else 0.0
