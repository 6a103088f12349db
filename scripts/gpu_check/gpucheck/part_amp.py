"""2a. One training step of R(2+1)D-18 under bf16 autocast in channels_last_3d against the same
step in fp32 (same init, same batch; loss and global gradient norm within tolerance)."""

from __future__ import annotations

import time

from .constants import FAIL, GRAD_TOL, LOSS_TOL, NEEDS_CUDA, PASS
from .student import compare_grads, grads_by_group, student_and_batch, sync


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
