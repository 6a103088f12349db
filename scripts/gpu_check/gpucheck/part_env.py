"""1. Environment: Python, torch, CUDA, cuDNN, NCCL, the GPU, nvidia-smi, memory and /dev/shm,
which optional packages import, where distinit is imported from, how videos are read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .constants import FAIL, PASS, ROOT
from .text import last_line, md_cell

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
