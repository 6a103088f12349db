"""The project's student and a fixed batch, and its gradients by layer group, compared: what the
bf16 (part_amp.py) and DDP (part_ddp.py) checks share."""

from __future__ import annotations


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


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
