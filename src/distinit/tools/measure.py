"""Measuring a block of work: throughput, peak memory (GPU allocator or this process's resident
set), and the share of time it waited on data. `distinit bench` times every row with these."""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

# dense bf16 tensor-core peak (FLOP/s) for MFU
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def cpu_model() -> str:
    """The CPU's model name as lscpu prints it (from /proc/cpuinfo), else the platform's: what a
    benchmark quotes its times with."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class PeakMemory:
    """Peak memory while a block runs: the GPU's allocated bytes, or this process's resident
    set sampled every 5 ms on a CPU (loader workers are other processes, not counted)."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * page)
            self._stop.wait(0.005)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], float], steps: int, warmup: int, device: torch.device) -> dict:
    """Run `fn` (it returns the clips it handled and the seconds it waited on data) `warmup`
    times untimed, then `steps` times: clips/s, peak memory, the share spent waiting on data."""
    for _ in range(warmup):
        fn()
    with PeakMemory(device) as mem:
        _sync(device)
        t0, clips, waited = time.perf_counter(), 0, 0.0
        for _ in range(steps):
            n, w = fn()
            clips, waited = clips + n, waited + w
        _sync(device)
        seconds = time.perf_counter() - t0
    return {"clips_s": clips / seconds, "mem": mem.peak, "wait": waited / seconds}
