"""Training-step throughput of the demo's students: fp32 baseline vs bf16 autocast +
channels_last_3d, in the same run.

    .venv/bin/python benchmarks/bench_train_step.py [--threads 2] [--steps 4]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from distinit.models.students import build_student


def clips_per_s(arch: str, stem_stride: int, batch: int, fast: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = build_student(arch, num_classes=20, width=16, layers=[1, 1, 1, 1],
                          stem_stride=stem_stride, stem_kernel=(3, 3))
    x = torch.randn(batch, 3, 8, 32, 32)  # (B, C, T, H, W) like the synthetic world's clips
    if fast:
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(model.parameters())

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            loss = model(x).float().logsumexp(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()  # warm-up: kernel selection
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"forward + backward + AdamW, 8x32x32 clips, width 16, {args.threads} threads")
    print(f"{'student':<14}{'stem stride':>12}{'batch':>7}{'fp32 clips/s':>15}"
          f"{'bf16+cl3d clips/s':>19}{'speed-up':>10}")
    for arch in ("r3d_18", "r2plus1d_18"):
        for stem_stride, batch in ((1, 32), (2, 32), (2, 64)):
            base = clips_per_s(arch, stem_stride, batch, False, args.steps)
            fast = clips_per_s(arch, stem_stride, batch, True, args.steps)
            print(f"{arch:<14}{stem_stride:>12}{batch:>7}{base:>15.0f}{fast:>19.0f}"
                  f"{fast / base:>9.1f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS of the process): {peak:.0f} MiB")


if __name__ == "__main__":
    main()
