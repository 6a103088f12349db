"""Is bf16 autocast's Conv3d weight gradient right on this machine?

Runs one Conv3d forward and backward under bf16 autocast in several fresh processes and
compares each weight-gradient sum with an fp64 reference on the same bf16-rounded operands.
On a correct build every process gives the same sum, close to the reference (bf16 rounding of
the operands and outputs costs a few percent); with torch 2.13+cpu on an AMX CPU the sum
changes from process to process, some 16-29% off.

    python benchmarks/check_bf16_conv3d.py [--shape 4,32,2,4,4] [--runs 6]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch
import torch.nn.functional as F


def one_run(shape: list[int], device: str) -> tuple[float, float]:
    torch.manual_seed(0)
    x = torch.randn(*shape)  # (B, C, T, H, W)
    w = torch.randn(shape[1], shape[1], 3, 3, 3) * 0.05
    xd, wd = x.to(device), w.to(device).clone().requires_grad_(True)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        y = F.conv3d(xd, wd, padding=1)
    y.float().pow(2).sum().backward()
    xr = x.bfloat16().double()
    wr = w.bfloat16().double().detach().requires_grad_(True)
    F.conv3d(xr, wr, padding=1).bfloat16().double().pow(2).sum().backward()
    return wd.grad.double().sum().item(), wr.grad.sum().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4,32,2,4,4", help="input B,C,T,H,W")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = [int(v) for v in args.shape.split(",")]
    if args.child:
        print(*one_run(shape, args.device))
        return
    worst = 0.0
    for i in range(args.runs):
        out = subprocess.run([sys.executable, __file__, "--child", "--shape", args.shape,
                              "--device", args.device], capture_output=True, text=True,
                             check=True).stdout.split()
        got, ref = float(out[0]), float(out[1])
        err = abs(got - ref) / abs(ref)
        worst = max(worst, err)
        print(f"process {i}: bf16 grad sum {got:.6g}, fp64 reference {ref:.6g}, "
              f"relative error {100 * err:.2f}%")
    print(f"worst relative error {100 * worst:.2f}% over {args.runs} processes "
          f"(torch {torch.__version__}, shape {args.shape})")


if __name__ == "__main__":
    main()
