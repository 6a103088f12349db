#!/usr/bin/env python3
"""The GPU check in one call: does distinit run right, and how fast, on a CUDA machine?

    bash scripts/gpu_check.sh [--out REPORT.md] [--budget-s 450] [--wheels DIR] [--world DIR]
                              [--video-io auto|pyav|opencv] [--dry-run] [--skip PART,...]

One Markdown report (`--out`; default $OUT/gpu_check.md when $OUT is set, else gpu_check.md):

1. Environment: Python, torch, CUDA, cuDNN, NCCL, the GPU, `nvidia-smi`, which optional
   packages import, how videos are read and written.
2. Correctness: one training step of R(2+1)D-18 (the project's student) under bf16 autocast in
   channels_last_3d against the same step in fp32 (same init, same batch; loss within 2%,
   global gradient norm within 5%); a one-process NCCL group with the student in DDP (its
   gradients equal the plain student's); `distinit distill` and `distinit finetune` through the
   CLI on the GPU, each stopped after 2 steps (stop_after=2) and finished with --resume.
3. Speed: `distinit bench --preset full` at batch 64, 16 (and 32), compile off and on (64),
   live and cached targets (bench measures both in one run), 16 loader workers (decode and the
   clip store); MFU, peak memory, the share of step time spent waiting on data, GPU utilisation
   sampled with nvidia-smi; single-process decoding, torchcodec's GPU decoder when it imports.

Every part runs in a process of its own with its own time limit; a part that fails, raises or
runs out of time is reported (with the error's last line) and the next one runs. `--budget-s`
is a global deadline: parts that would start past it are reported skipped. The report is
written again after every part, so a call cut short still leaves what was done.

No install: the project runs from src/ (PYTHONPATH=src). distinit reads and writes videos with
PyAV only; where PyAV is missing, `--wheels DIR` installs the wheels in DIR (a PyAV wheel for
this Python, e.g. av-*-cp312-*manylinux*.whl) into a temporary folder on PYTHONPATH, and without
one a stand-in for PyAV built on OpenCV (scripts/gpu_check/avshim) is put on PYTHONPATH, so the
project's own video code runs on cv2 (mp4v videos written, OpenCV decoding timed).

`--dry-run` runs every part on the CPU with tiny sizes (the CUDA-only ones are reported skipped,
"needs CUDA"), writes the report and exits 0 when every part that ran passed: CI runs it
(tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIM = Path(__file__).resolve().parent / "gpu_check" / "avshim"
PASS, FAIL, ERROR, SKIPPED, TIMEOUT = "PASS", "FAIL", "ERROR", "SKIPPED", "TIMEOUT"
RUNNING = "RUNNING"  # a part's partial result, written as it goes
NEEDS_CUDA = "needs CUDA (no CUDA device here)"
RESERVE_S = 5  # kept back from the global deadline to write the report
LOSS_TOL, GRAD_TOL = 0.02, 0.05  # bf16 vs fp32: relative loss, relative global gradient norm
DEFAULT_PEAK_TFLOPS = 989.0  # H100/H200 dense bf16


@dataclass(frozen=True)
class Part:
    key: str
    section: str
    title: str
    kind: str  # the function that runs it: part_<kind>
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


# =============================================================================================
# The parent: setting up, running each part in a child process, writing the report.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = str(Path(os.environ["OUT"]) / "gpu_check.md") if os.environ.get("OUT") \
        else "gpu_check.md"
    parser.add_argument("--out", default=default_out, help=f"the report (default {default_out})")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="global deadline in seconds; parts past it are skipped")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on the CPU; CUDA-only parts reported skipped")
    parser.add_argument("--wheels", default="", help="folder of wheels (e.g. PyAV for this "
                        "Python) to unpack into a temporary folder on PYTHONPATH")
    parser.add_argument("--world", default="", help="a synthetic world made by `distinit synth "
                        "DIR --size tiny` (default: generated here)")
    parser.add_argument("--video-io", default="auto", choices=("auto", "pyav", "opencv"),
                        help="auto: PyAV if it imports, else the OpenCV stand-in")
    parser.add_argument("--device", default="", help="default cuda (cpu with --dry-run)")
    parser.add_argument("--bench-workers", type=int, default=0,
                        help="loader workers of the bench runs (default min(16, cores))")
    parser.add_argument("--bench-videos", type=int, default=128,
                        help="videos the bench writes (320x240, 64 frames)")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help=f"peak for MFU when bench knows none (default {DEFAULT_PEAK_TFLOPS:g})")
    parser.add_argument("--skip", default="", help="comma-separated parts not to run: "
                        + ",".join(p.key for p in PARTS))
    parser.add_argument("--work", default="", help="working folder (default: a temporary one, "
                        "deleted at the end)")
    parser.add_argument("--no-logs", action="store_true",
                        help="do not copy the parts' logs next to the report")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ctx", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, Path(args.ctx), Path(args.result))
    return parent_main(args)


def parent_main(args) -> int:
    t0 = time.time()
    deadline = t0 + args.budget_s
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    keep_work = bool(args.work)
    work = Path(args.work).resolve() if args.work else Path(
        tempfile.mkdtemp(prefix="distinit-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {p.key for p in PARTS}
    if unknown:
        print(f"gpu_check: unknown part(s) in --skip: {', '.join(sorted(unknown))}",
              file=sys.stderr)
        return 2

    if args.dry_run:  # CI's 2 cores are shared: one thread per process unless told otherwise
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONUNBUFFERED"] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")
    paths = [str(ROOT / "src")]
    wheels_note = "none given"
    if args.wheels:
        site, wheels_note = unpack_wheels(Path(args.wheels), work / "site")
        if site:
            paths.append(str(site))
    av_real = import_check("av", paths)
    cv2_ok = import_check("cv2", paths)
    if args.video_io == "pyav" or (args.video_io == "auto" and av_real.startswith("ok")):
        video_io = "pyav"
        video_note = f"PyAV ({av_real})"
    elif cv2_ok.startswith("ok"):
        video_io = "opencv"
        paths.insert(0, str(SHIM))  # before the wheels, which may hold a PyAV
        why = "asked for with --video-io opencv" if args.video_io == "opencv" else \
            f"PyAV does not import: {av_real}"
        cv2_version = cv2_ok.removeprefix("ok ")
        video_note = (f"OpenCV stand-in for PyAV (scripts/gpu_check/avshim, cv2 {cv2_version}; "
                      f"{why}): videos written as mp4v, decoding speed is OpenCV's")
    else:
        video_io = "none"
        video_note = f"none: PyAV does not import ({av_real}), nor cv2 ({cv2_ok})"
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))

    world = ""
    if args.world:
        world = str(Path(args.world).resolve())
    ctx = {
        "dry_run": args.dry_run, "device": device, "work": str(work), "world": world,
        "video_io": video_io, "video_note": video_note, "wheels_note": wheels_note,
        "av_real": av_real, "python": sys.executable,
        "bench_workers": args.bench_workers or min(16, os.cpu_count() or 1),
        "bench_videos": args.bench_videos, "peak_tflops": args.peak_tflops,
    }
    report = Report(out, args, t0, ctx)
    report.write()
    for part in PARTS:
        if part.key in skip:
            report.add(part, skipped("--skip"), 0.0)
            continue
        if args.dry_run and part.dry_skip:
            report.add(part, skipped(part.dry_skip), 0.0)
            continue
        left = deadline - time.time() - RESERVE_S
        needed = min(part.min_s, part.dry_budget) if args.dry_run else part.min_s
        if left < needed:
            report.add(part, skipped(f"global deadline: {max(left, 0):.0f} s of --budget-s "
                                     f"{args.budget_s:g} left, this part needs {needed} s"), 0.0)
            continue
        limit = min(part.dry_budget if args.dry_run else part.budget, left)
        print(f"gpu_check: {part.key} (up to {limit:.0f} s) ...", file=sys.stderr, flush=True)
        t = time.time()
        res = run_child(part, {**ctx, "deadline": time.time() + limit}, work, limit)
        report.add(part, res, time.time() - t)
        print(f"gpu_check: {part.key}: {res['status']} ({time.time() - t:.1f} s) "
              f"{res['summary']}", file=sys.stderr, flush=True)
    report.finish()
    if not args.no_logs:
        copy_logs(work / "logs", out.with_name(out.stem + "_logs"))
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"gpu_check: report written to {out}", file=sys.stderr)
    bad = [r for _, r, _ in report.results if r["status"] in (FAIL, ERROR, TIMEOUT)]
    return 1 if bad else 0


def skipped(reason: str) -> dict:
    return {"status": SKIPPED, "summary": reason, "lines": []}


def import_check(module: str, paths: list[str]) -> str:
    """'ok VERSION' when `module` imports in a fresh Python with `paths` first, else the error's
    last line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    code = (f"import os, {module} as m; print(getattr(m, '__version__', '?'), "
            "os.path.dirname(m.__file__))")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=60)
    except subprocess.TimeoutExpired:
        return "import timed out"
    if r.returncode == 0:
        version, _, where = r.stdout.strip().partition(" ")
        return f"ok {version} ({where})"
    return last_line(r.stderr)


def unpack_wheels(folder: Path, site: Path) -> tuple[Path | None, str]:
    """Unzip every wheel in `folder` into `site` (a wheel is a zip of its installed files; no
    registry, no dependencies)."""
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if not wheels:
        return None, f"--wheels {folder}: no .whl files there"
    site.mkdir(parents=True, exist_ok=True)
    done = []
    for w in wheels:
        try:
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
            done.append(w.name)
        except (OSError, zipfile.BadZipFile) as e:
            done.append(f"{w.name} (not unpacked: {e})")
    return site, f"unpacked into {site}: {', '.join(done)}"


def run_child(part: Part, ctx: dict, work: Path, limit: float) -> dict:
    """Run one part in a process of its own (its own session, so a timeout ends its whole
    process group: bench, loader workers); its result, or why there is none."""
    ctx_file = work / f"ctx_{part.key}.json"
    res_file = work / f"result_{part.key}.json"
    ctx_file.write_text(json.dumps({**ctx, "part": part.key, "args": part.args}))
    res_file.unlink(missing_ok=True)
    log = work / "logs" / f"{part.key}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part.kind,
           "--ctx", str(ctx_file), "--result", str(res_file)]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(ROOT))
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            end_group(proc)
            res = read_result(res_file)
            lines = res.get("lines", []) if res else []
            return {"status": TIMEOUT, "summary": f"ran past its {limit:.0f} s limit; stopped "
                    f"(last output: {last_line(tail(log))})", "lines": lines + log_tail(log)}
    res = read_result(res_file)
    if res is None or res.get("status") == RUNNING:
        return {"status": ERROR, "summary": f"the part's process exited with code {rc} before "
                f"its result: {last_line(tail(log))}",
                "lines": (res or {}).get("lines", []) + log_tail(log)}
    return res


def end_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group this script started for one part."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def read_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def tail(path: Path, n: int = 8000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", "replace")


def log_tail(path: Path, lines: int = 15) -> list[str]:
    text = [x for x in tail(path).splitlines() if x.strip()][-lines:]
    return ["", "Last lines of the part's output:", "", *[f"    {x}" for x in text]] if text else []


def last_line(text: str) -> str:
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else "(no output)"


def copy_logs(src: Path, dst: Path, limit: int = 200_000) -> None:
    """The parts' logs next to the report (the last `limit` bytes of each)."""
    files = sorted(src.glob("*.log"))
    if not files:
        return
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        (dst / f.name).write_bytes(f.read_bytes()[-limit:])


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


def md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# =============================================================================================
# The child: one part, its result written as JSON.


def child_main(kind: str, ctx_file: Path, result_file: Path) -> int:
    ctx = {**json.loads(ctx_file.read_text()), "result_file": str(result_file)}
    fn = globals()[f"part_{kind}"]
    try:
        res = fn(ctx, **ctx.get("args", {}))
    except Exception as e:  # reported, never raised: the next part still runs
        tb = traceback.format_exc().strip().splitlines()
        found = (read_result(result_file) or {}).get("lines", [])  # its progress() so far
        res = {"status": TIMEOUT if isinstance(e, TimeoutError) else ERROR,
               "summary": f"{type(e).__name__}: {last_line(str(e))}",
               "lines": [*found, "", "Traceback (last lines):", "",
                         *[f"    {x}" for x in tb[-12:]]]}
    write_json(result_file, res)
    return 0


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, default=str))
    os.replace(tmp, path)


def progress(ctx: dict, lines: list[str]) -> None:
    """What a part has found so far: the report keeps it if the part is stopped at its limit."""
    write_json(Path(ctx["result_file"]), {"status": RUNNING, "summary": "", "lines": lines})


def time_left(ctx: dict) -> float:
    return ctx["deadline"] - time.time()


def run_cmd(ctx: dict, args: list[str], name: str, timeout: float | None = None) -> tuple[int, str]:
    """Run `python -m distinit.cli ARGS` with its output in logs/PART_NAME.log; (exit code,
    output). Raises TimeoutError past the part's deadline."""
    cmd = [ctx["python"], "-m", "distinit.cli", *args]
    limit = max(1.0, min(timeout or 1e9, time_left(ctx) - 1))
    log = Path(ctx["work"]) / "logs" / f"{ctx['part']}_{name}.log"
    print(f"$ {' '.join(cmd)}", flush=True)
    with open(log, "w") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=limit,
                                cwd=str(ROOT)).returncode
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{name} ran past {limit:.0f} s (see {log.name})") from None
    text = log.read_text(errors="replace")
    print(text.partition("\n")[2][-3000:], flush=True)
    return rc, text


def cli_failure(name: str, text: str) -> str:
    errors = [x for x in text.splitlines() if "error" in x.lower() or "Error" in x]
    return f"{name} failed: {last_line(errors[-1] if errors else text)}"


# ---------------------------------------------------------------------------------------------
# 1. Environment.


OPTIONAL = ("av", "cv2", "torchvision", "timm", "safetensors", "torchcodec", "decord", "triton",
            "numpy", "PIL", "yaml", "tqdm", "tensorboard", "pynvml")


def part_env(ctx: dict) -> dict:
    import platform

    lines = [f"- Python {platform.python_version()} ({sys.executable}), {os.cpu_count()} cores, "
             f"{platform.platform()}"]
    import torch
    import torch.distributed as td

    cuda = torch.cuda.is_available()
    lines.append(f"- torch {torch.__version__}, CUDA runtime {torch.version.cuda}, cuDNN "
                 f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else '-'}"
                 f", CUDA available: {cuda}, {torch.cuda.device_count()} device(s)")
    gpu = "no GPU"
    if cuda:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"- GPU {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute "
                         f"capability {p.major}.{p.minor}, {p.multi_processor_count} SMs")
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name(0)
        gpu = f"{name}, {total / 2**30:.0f} GiB"
        try:
            v = torch.cuda.nccl.version()
            nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception as e:  # a build without NCCL
            nccl = f"? ({type(e).__name__})"
        lines.append(f"- free memory {free / 2**30:.1f} GiB of {total / 2**30:.1f} GiB; bf16 "
                     f"supported: {torch.cuda.is_bf16_supported()}; NCCL {nccl}; arch list "
                     f"{' '.join(torch.cuda.get_arch_list())}")
    lines.append(f"- torch.distributed available: {td.is_available()}, NCCL: "
                 f"{td.is_available() and td.is_nccl_available()}, gloo: "
                 f"{td.is_available() and td.is_gloo_available()}")
    smi = shutil.which("nvidia-smi")
    if smi:
        r = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,memory.used,"
                            "utilization.gpu,temperature.gpu,power.draw,power.limit,clocks.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        lines.append(f"- nvidia-smi (name, driver, memory total/used, utilisation, temperature, "
                     f"power draw/limit, SM clock): {r.stdout.strip() or last_line(r.stderr)}")
    else:
        lines.append("- nvidia-smi: not on PATH")
    lines.append(f"- memory: {meminfo_gib():.0f} GiB; /dev/shm: {shm_gib()} (loader workers pass "
                 f"batches through it: bench's 16 workers x 4 prefetched batches of 64 full-size "
                 f"clips need ~5 GiB); open files limit: {nofile_limit()}")
    compilers = [c for c in ("gcc", "cc", "g++", "nvcc") if shutil.which(c)]
    lines.append(f"- compilers on PATH: {', '.join(compilers) or 'none'} (torch.compile's "
                 "Triton builds a small C launcher with one)")
    lines += ["", "| package | imports |", "|---|---|"]
    for name in OPTIONAL:
        if name == "av" and ctx["video_io"] == "opencv":
            state = f"real PyAV: {ctx['av_real']} (an OpenCV stand-in is on PYTHONPATH)"
        else:
            try:
                module = __import__(name)
                state = f"ok {getattr(module, '__version__', '')}"
                if name == "av":
                    state += f" ({Path(module.__file__).parent})"
            except Exception as e:  # ImportError, or a broken build's RuntimeError/OSError
                state = f"no: {type(e).__name__}: {last_line(str(e))}"
        lines.append(f"| {name} | {md_cell(state)} |")
    import distinit

    where = Path(distinit.__file__).resolve()
    lines += ["", f"- distinit imported from {where}",
              f"- videos: {ctx['video_note']}", f"- wheels: {ctx['wheels_note']}"]
    if not str(where).startswith(str(ROOT / "src")):
        return {"status": FAIL, "summary": f"distinit imported from {where}, not this tree",
                "lines": lines}
    if ctx["device"].startswith("cuda") and not cuda:
        return {"status": FAIL, "summary": f"torch {torch.__version__} sees no CUDA device",
                "lines": lines}
    return {"status": PASS, "summary": f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"{gpu}; videos via {ctx['video_io']}", "lines": lines}


def meminfo_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def shm_gib() -> str:
    try:
        u = shutil.disk_usage("/dev/shm")
    except OSError as e:
        return f"unavailable ({e})"
    return f"{u.free / 2**30:.1f} GiB free of {u.total / 2**30:.1f} GiB"


def nofile_limit() -> str:
    try:
        import resource

        return "/".join(str(x) for x in resource.getrlimit(resource.RLIMIT_NOFILE))
    except (ImportError, OSError, ValueError):
        return "?"


# ---------------------------------------------------------------------------------------------
# 2a. bf16 autocast + channels_last_3d against fp32.


def student_and_batch(ctx: dict, full: dict, tiny: dict):
    """The project's student (make_student) and a fixed batch: `full` sizes on the GPU, `tiny`
    in the dry run."""
    import torch

    from distinit.build import make_student
    from distinit.config import ModelConfig

    s = tiny if ctx["dry_run"] else full
    mc = ModelConfig(arch="r2plus1d_18", **s.get("model", {}))
    torch.manual_seed(0)
    net = make_student(mc, s["classes"])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(s["batch"], 3, s["frames"], s["size"], s["size"], generator=g)
    y = torch.randint(0, s["classes"], (s["batch"],), generator=g)
    desc = (f"R(2+1)D-18 (width {mc.width}, layers {mc.layers or 'default'}), batch "
            f"{s['batch']} of 3x{s['frames']}x{s['size']}x{s['size']}, {s['classes']} classes")
    return net, x, y, desc


GROUPS = ("stem", "layer1", "layer2", "layer3", "layer4", "fc")


def grads_by_group(net) -> dict:
    import torch

    out = {}
    for g in GROUPS:
        ps = [p.grad.detach().float().flatten() for n, p in net.named_parameters()
              if n.split(".")[0] == g and p.grad is not None]
        out[g] = torch.cat(ps) if ps else torch.zeros(1)
    return out


def compare_grads(a: dict, b: dict, names: tuple[str, str] = ("fp32", "test")
                  ) -> tuple[list[str], float, float]:
    """Per group and global: relative norm difference and cosine of b against a."""
    import torch

    rows = [f"| layers | grad norm {names[0]} | grad norm {names[1]} | rel. diff | cosine |",
            "|---|---|---|---|---|"]
    ga, gb = torch.cat(list(a.values())), torch.cat(list(b.values()))
    for name, va, vb in [*((g, a[g], b[g]) for g in GROUPS), ("all", ga, gb)]:
        na, nb = va.norm().item(), vb.norm().item()
        cos = (va @ vb).item() / max(na * nb, 1e-30)
        rows.append(f"| {name} | {na:.4g} | {nb:.4g} | {abs(nb - na) / max(na, 1e-30):.2%} | "
                    f"{cos:.5f} |")
    na, nb = ga.norm().item(), gb.norm().item()
    return rows, abs(nb - na) / max(na, 1e-30), (ga @ gb).item() / max(na * nb, 1e-30)


def part_amp(ctx: dict) -> dict:
    import copy

    import torch
    import torch.nn.functional as F

    from distinit.engine.runtime import Runtime

    dev = torch.device(ctx["device"])
    cuda = dev.type == "cuda"
    net, x, y, desc = student_and_batch(
        ctx, {"batch": 8, "frames": 16, "size": 112, "classes": 400},
        {"batch": 2, "frames": 4, "size": 32, "classes": 10,
         "model": {"width": 8, "layers": [1, 1, 1, 1]}})
    # The reference: plain fp32, TF32 off (cuDNN would otherwise run fp32 convs in TF32).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    amp = torch.bfloat16 if cuda else None
    ref_rt, test_rt = Runtime(dev, None, False), Runtime(dev, amp, True)
    ref = ref_rt.place(copy.deepcopy(net))
    test = test_rt.place(copy.deepcopy(net))
    x, y = x.to(dev), y.to(dev)

    def step(model, rt) -> tuple[float, dict, float]:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        inp = rt.batch({"x": x})["x"]
        sync(dev)
        t = time.perf_counter()
        with rt.autocast():
            loss = F.cross_entropy(model(inp).float(), y)
        loss.backward()
        grads = grads_by_group(model)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(dev)
        return loss.item(), grads, time.perf_counter() - t

    la, ga, _ = step(ref, ref_rt)
    lb, gb, _ = step(test, test_rt)
    rows, norm_diff, cosine = compare_grads(ga, gb)
    loss_diff = abs(lb - la) / max(abs(la), 1e-30)
    layout_ok = test.stem[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    finite = all(torch.isfinite(p).all().item() for p in test.parameters())
    # Speed of the two steps (a few more, on the updated weights; informative only).
    times = {}
    for label, model, rt in (("fp32", ref, ref_rt), ("test", test, test_rt)):
        step(model, rt)  # warm-up (cuDNN picks its algorithms)
        times[label] = min(step(model, rt)[2] for _ in range(3))
    what = "bf16 autocast + channels_last_3d" if amp else \
        "fp32 channels_last_3d (bf16 autocast: skipped, needs CUDA (no CUDA device here))"
    lines = [f"- student: {desc}; SGD step; same initial weights and batch",
             f"- test: {what}; reference: fp32, contiguous, TF32 off",
             f"- loss: fp32 {la:.6f}, test {lb:.6f}, relative difference {loss_diff:.3%} "
             f"(tolerance {LOSS_TOL:.0%})",
             f"- global gradient norm: relative difference {norm_diff:.3%} (tolerance "
             f"{GRAD_TOL:.0%}); cosine {cosine:.5f}",
             f"- student weights in channels_last_3d: {layout_ok}; weights finite after the "
             f"step: {finite}",
             f"- step time (best of 3): fp32 {1e3 * times['fp32']:.1f} ms, test "
             f"{1e3 * times['test']:.1f} ms ({times['fp32'] / times['test']:.2f}x)",
             "", *rows]
    if not amp:
        lines.insert(0, f"- bf16 autocast: skipped, {NEEDS_CUDA}; on the CPU it is known to "
                        "be wrong (benchmarks/check_bf16_conv3d.py), so the dry run checks the "
                        "layout alone")
    ok = loss_diff <= LOSS_TOL and norm_diff <= GRAD_TOL and layout_ok and finite
    return {"status": PASS if ok else FAIL,
            "summary": f"{'bf16' if amp else 'fp32 (bf16 needs CUDA)'} + channels_last_3d vs "
                       f"fp32: loss {loss_diff:.2%} (<= {LOSS_TOL:.0%}), grad norm "
                       f"{norm_diff:.2%} (<= {GRAD_TOL:.0%}), cosine {cosine:.4f}",
            "lines": lines}


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ---------------------------------------------------------------------------------------------
# 2b. NCCL + DDP.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def part_ddp(ctx: dict) -> dict:
    import copy
    import datetime
    import warnings

    import torch
    import torch.distributed as td
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from distinit.engine.runtime import Runtime

    dev = torch.device(ctx["device"])
    cuda = dev.type == "cuda"
    if cuda and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    backend = "nccl" if cuda else "gloo"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    if cuda:
        torch.cuda.set_device(dev)
    net, x, y, desc = student_and_batch(
        ctx, {"batch": 4, "frames": 8, "size": 112, "classes": 400},
        {"batch": 2, "frames": 4, "size": 32, "classes": 10,
         "model": {"width": 8, "layers": [1, 1, 1, 1]}})
    rt = Runtime(dev, torch.bfloat16 if cuda else None, cuda)
    td.init_process_group(backend, world_size=1, rank=0,
                          timeout=datetime.timedelta(seconds=60))
    try:
        t = torch.full((4,), 3.0, device=dev)
        td.all_reduce(t)
        reduce_ok = bool((t == 3.0).all().item())
        plain = rt.place(copy.deepcopy(net))
        model = rt.place(copy.deepcopy(net))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ddp = DDP(model, device_ids=[dev.index] if cuda else None)
            grads = []
            for m in (ddp, plain):
                inp = rt.batch({"x": x})["x"]
                with rt.autocast():
                    loss = F.cross_entropy(m(inp).float(), y.to(dev))
                loss.backward()
                grads.append(grads_by_group(model if m is ddp else plain))
            opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
            opt.step()
            sync(dev)
        finite = all(torch.isfinite(p).all().item() for p in model.parameters())
        rows, norm_diff, cosine = compare_grads(grads[1], grads[0], ("plain", "DDP"))
        td.barrier()
    finally:
        td.destroy_process_group()
    ok = reduce_ok and finite and norm_diff < 0.01 and cosine > 0.999
    notes = sorted({f"{w.category.__name__}: {last_line(str(w.message))}" for w in caught})
    lines = [f"- student: {desc}; {backend} group of one process (MASTER_ADDR=127.0.0.1, "
             f"MASTER_PORT={os.environ['MASTER_PORT']})",
             f"- all_reduce of a tensor: {'ok' if reduce_ok else 'WRONG'}",
             f"- DDP gradients against the plain student's (same weights, batch; "
             f"{'bf16 autocast, channels_last_3d' if cuda else 'fp32'}): norm difference "
             f"{norm_diff:.4%}, cosine {cosine:.6f} (needs < 1%, > 0.999)",
             f"- weights finite after the DDP step: {finite}",
             *[f"- warning: {n}" for n in notes], "", *rows]
    status = PASS if ok else FAIL
    summary = (f"{backend} + DDP step: grad norm diff {norm_diff:.3%}, cosine {cosine:.5f}, "
               f"all_reduce {'ok' if reduce_ok else 'wrong'}")
    if not cuda:
        lines.insert(0, f"- NCCL: skipped, {NEEDS_CUDA}; the same check ran with gloo on the "
                        f"CPU as a stand-in: {status}")
        return {"status": SKIPPED, "summary": f"NCCL {NEEDS_CUDA}; gloo stand-in on CPU: "
                f"{status} ({summary})", "lines": lines}
    return {"status": status, "summary": summary, "lines": lines}


# ---------------------------------------------------------------------------------------------
# 2c. distill and finetune through the CLI, stopped and resumed.


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


# ---------------------------------------------------------------------------------------------
# 3. Speed: distinit bench, and decoding.


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


def part_decode(ctx: dict) -> dict:
    """Single-process decoding of 8-frame clips: the backend in use, torchcodec on the CPU and
    on the GPU when it imports; torchcodec's frames compared with the first backend's."""
    import numpy as np
    import torch

    from distinit.data.video import probe, read_frames, write_video

    if ctx["video_io"] == "none":
        return {"status": FAIL, "summary": f"no way to read videos: {ctx['video_note']}",
                "lines": []}
    videos = sorted((Path(ctx["work"]) / "bench" / "videos").glob("*.mp4"))[:16]
    if not videos:  # bench did not run: a few of our own
        folder = Path(ctx["work"]) / "decode_videos"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(4):
            frames = rng.integers(0, 256, (32, 120, 160, 3), dtype=np.uint8)
            write_video(folder / f"v{i}.mp4", frames, fps=25, gop=16)
        videos = sorted(folder.glob("*.mp4"))
    clips_n = 8 if ctx["dry_run"] else 64
    rng = np.random.default_rng(0)
    info = probe(videos[0])
    picks = [(videos[i % len(videos)], int(rng.integers(0, max(info.num_frames - 8, 1))))
             for i in range(clips_n)]
    cuda = ctx["device"].startswith("cuda") and torch.cuda.is_available()
    lines = [f"- {clips_n} clips of 8 frames at random starts from {len(videos)} videos of "
             f"{info.width}x{info.height}, {info.num_frames} frames; one process",
             "", "| backend | device | clips/s | mean abs. difference to the first |",
             "|---|---|---|---|"]
    try:
        import torchcodec  # noqa: F401

        torchcodec_ok = ""
    except Exception as e:  # ImportError, or RuntimeError without FFmpeg's libraries
        torchcodec_ok = f"{type(e).__name__}: {last_line(str(e))}"
    configs = [("pyav", "cpu")]
    skips = [] if cuda else [f"- torchcodec GPU decoder: skipped, {NEEDS_CUDA}"]
    if torchcodec_ok:
        skips.append(f"- torchcodec: skipped, it does not import ({torchcodec_ok})")
    else:
        configs += [("torchcodec", "cpu")] + ([("torchcodec", "cuda")] if cuda else [])
    reference, status, failures = None, PASS, []
    for backend, device in configs:
        label = backend if backend != "pyav" or ctx["video_io"] == "pyav" else \
            "pyav (OpenCV stand-in)"
        try:
            read_frames(picks[0][0], range(8), backend, device=device)  # warm-up
            t = time.perf_counter()
            out = [read_frames(v, range(s, s + 8), backend, device=device) for v, s in picks]
            rate = clips_n / (time.perf_counter() - t)
        except Exception as e:
            failures.append(f"{label} on {device}: {type(e).__name__}: {last_line(str(e))}")
            lines.append(f"| {label} | {device} | failed: {md_cell(failures[-1])} | |")
            if backend == "pyav":
                status = FAIL
            continue
        if reference is None:
            reference, diff = out, "-"
        else:
            d = np.mean([np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()
                         for a, b in zip(reference, out)])
            diff = f"{d:.2f}"
            if d > 8:
                failures.append(f"{label} on {device} differs from pyav by {d:.1f} levels")
                status = FAIL
        lines.append(f"| {label} | {device} | {rate:.1f} | {diff} |")
    lines += ["", *skips]
    if failures and status == PASS:  # torchcodec failing to decode is reported, not failed
        lines.append(f"- not counted against the check: {'; '.join(failures)}")
    summary = ", ".join(x.split("|")[1].strip() + " " + x.split("|")[2].strip() + " "
                        + x.split("|")[3].strip() + " clips/s"
                        for x in lines if x.startswith("| ") and not x.startswith("| backend"))
    if skips:
        summary += "; " + "; ".join(s.lstrip("- ") for s in skips)
    return {"status": status, "summary": summary, "lines": lines}


if __name__ == "__main__":
    sys.exit(main())
