"""2b. A one-process NCCL group with the student in DDP: its gradients equal the plain student's
(gloo on the CPU stands in where there is no CUDA)."""

from __future__ import annotations

import os
import socket

from .constants import FAIL, NEEDS_CUDA, PASS, SKIPPED
from .student import compare_grads, grads_by_group, student_and_batch, sync
from .text import last_line


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
