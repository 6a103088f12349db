"""The one training loop: distillation, fine-tuning and supervised training all run here.

A method is an `nn.Module` whose `forward(batch)` returns `{"loss": ..., **logs}` and whose
trainable part is `method.net`. The loop owns everything else: devices, precision, DDP,
optimizer, schedule, accumulation, clipping, logging, checkpoints and exact resumption.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from distinit import dist
from distinit.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from distinit.config import Config, OptimConfig, save_config, to_dict
from distinit.errors import UserError


class EpochSampler(Sampler[int]):
    """A permutation fixed by (seed, epoch), sharded over ranks, that can start mid-epoch.

    Knowing the order from the seed alone is what makes `--resume` continue with exactly the
    batches an uninterrupted run would have seen.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 shuffle: bool = True):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self.epoch, self.skip_batches = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world)  # drop_last, same on every rank

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        mine = order[self.rank:: self.world][: self.batches_per_epoch * self.batch_size]
        return iter(mine[self.skip_batches * self.batch_size:].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware runs it fast, fp32 otherwise."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise UserError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    # bf16 autocast on CPU is fast with AVX512-BF16 or AMX (4-5x over fp32) and slow without.
    cpu = torch.cpu
    fast = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
        cpu, "_is_amx_tile_supported", lambda: False)()
    return torch.bfloat16 if fast else None


def use_channels_last(setting: str, device: torch.device) -> bool:
    if setting not in ("auto", "on", "off"):
        raise UserError(f"channels_last must be auto, on or off, got {setting!r}")
    if setting == "auto":
        return resolve_precision("auto", device) is not None
    return setting == "on"


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() in (4, 5):
                v = v.contiguous(memory_format=torch.channels_last_3d if v.dim() == 5
                                 else torch.channels_last)
        out[k] = v
    return out


def build_optimizer(net: nn.Module, cfg: OptimConfig, head_prefixes: tuple[str, ...] = ()):
    """SGD with momentum (the paper) or AdamW (trains tiny nets more reliably). No weight decay
    on norms and biases; parameters under `head_prefixes` get lr * head_lr_mult."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in net.named_parameters():
        if p.requires_grad:
            key = (p.dim() <= 1, name.startswith(head_prefixes) if head_prefixes else False)
            groups.setdefault(key, []).append(p)
    param_groups = [
        {"params": ps, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
         "lr_mult": cfg.head_lr_mult if is_head else 1.0}
        for (no_decay, is_head), ps in groups.items()
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr)
    raise UserError(f"optim.optimizer must be sgd or adamw, got {cfg.optimizer!r}")


def lr_factor(step: int, steps_per_epoch: int, total_steps: int, cfg: OptimConfig) -> float:
    """Linear warm-up, then cosine decay to zero or a step decay by `gamma`."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "step":
        return cfg.gamma ** int(step / max(1.0, cfg.step_epochs * steps_per_epoch))
    raise UserError(f"optim.schedule must be step or cosine, got {cfg.schedule!r}")


class MetricLog:
    """JSON lines and TensorBoard, written by rank 0 only."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tb"))

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        for k, v in values.items():
            if isinstance(v, int | float):
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def train(cfg: Config, method: nn.Module, dataset: Dataset, *, resume: bool = False,
          head_prefixes: tuple[str, ...] = (), on_epoch_end: Callable[[int], dict] | None = None,
          desc: str = "train") -> dict:
    """Train `method.net` on `dataset` as `cfg` says; returns the last logged metrics.

    Checkpoints go to `cfg.out_dir/last.pt`; with `resume` the run continues from there exactly
    (weights, optimizer, schedule, step, RNG and data order).
    """
    ctx = dist.setup(cfg.device)
    out_dir = Path(cfg.out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed * 1000 + ctx.rank)
    amp_dtype = resolve_precision(cfg.precision, ctx.device)
    channels_last = use_channels_last(cfg.channels_last, ctx.device)

    method.to(ctx.device)
    net = method.net
    if channels_last:
        net.to(memory_format=torch.channels_last_3d if _has_conv3d(net) else torch.channels_last)
    optimizer = build_optimizer(net, cfg.optim, head_prefixes)
    if ctx.world > 1:  # only the trainable part; teachers stay outside DDP
        method.net = nn.parallel.DistributedDataParallel(net)

    o = cfg.optim
    sampler = EpochSampler(len(dataset), o.batch_size, cfg.seed, ctx.rank, ctx.world)
    steps_per_epoch = sampler.batches_per_epoch // o.accum_steps
    if steps_per_epoch == 0:
        raise UserError(f"{len(dataset)} training samples are fewer than one step needs "
                        f"(batch_size {o.batch_size} x {ctx.world} processes x accum_steps "
                        f"{o.accum_steps}); lower optim.batch_size")
    total_steps = max(1, round(o.epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [lambda s, m=g["lr_mult"]: m * lr_factor(s, steps_per_epoch, total_steps, o)
                    for g in optimizer.param_groups])

    step = 0
    ckpt_path = out_dir / "last.pt"
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step = state["step"]

    def checkpoint() -> None:
        if ctx.is_main:
            save_checkpoint({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "step": step,
                             "rng": rng_state(), "config": to_dict(cfg)}, ckpt_path)

    log = MetricLog(out_dir, ctx.is_main)
    stop_at = min(total_steps, cfg.stop_after) if cfg.stop_after > 0 else total_steps
    last: dict = {}
    interactive = ctx.is_main and sys.stderr.isatty()
    bar = tqdm(total=stop_at, initial=step, desc=desc, disable=not interactive, unit="step",
               dynamic_ncols=True)
    method.train()
    t0, seen = time.perf_counter(), 0
    while step < stop_at:
        epoch = step // steps_per_epoch
        sampler.set_epoch(epoch, skip_batches=(step % steps_per_epoch) * o.accum_steps)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=o.batch_size, sampler=sampler, drop_last=True,
                            num_workers=cfg.data.num_workers,
                            pin_memory=ctx.device.type == "cuda",
                            # Worker seeds from their own generator, not the global RNG, so a
                            # resumed run draws the same random numbers as an uninterrupted one.
                            generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        replaced = torch.zeros(1)
        micro = 0
        for batch in loader:
            replaced += batch.get("bad", torch.zeros(1)).sum()
            batch = to_device(batch, ctx.device, channels_last)
            sync = (micro + 1) % o.accum_steps == 0
            with _maybe_no_sync(method.net, sync), torch.autocast(
                    ctx.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = method(batch)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower the "
                                             "learning rate or enable optim.clip_grad")
                (loss / o.accum_steps).backward()
            seen += o.batch_size * ctx.world
            micro += 1
            if not sync:
                continue
            grad_norm = (nn.utils.clip_grad_norm_(net.parameters(), o.clip_grad)
                         if o.clip_grad > 0 else None)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == stop_at:
                rate = seen / (time.perf_counter() - t0)
                last = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                        "samples_per_s": round(rate, 2),
                        **{k: float(v.detach() if torch.is_tensor(v) else v) for k, v in out.items()}}
                if grad_norm is not None:
                    last["grad_norm"] = float(grad_norm)
                log.write(step, last)
                bar.set_postfix(loss=f"{last['loss']:.3f}", rate=f"{rate:.1f}/s")
                if ctx.is_main and not interactive:
                    print(f"[{desc}] step {step}/{stop_at} epoch {epoch} loss {last['loss']:.4f} "
                          f"{rate:.1f} samples/s", flush=True)
            if step % cfg.ckpt_every == 0 or step == stop_at:
                checkpoint()
            if step == stop_at or step % steps_per_epoch == 0:
                break
        n_bad = int(dist.all_reduce_sum(replaced)[0])
        if n_bad and ctx.is_main:
            print(f"[{desc}] epoch {epoch}: {n_bad} samples came from unreadable videos and "
                  "were replaced (files named in the warnings above)", flush=True)
        if step % steps_per_epoch == 0 and on_epoch_end is not None:
            extra = on_epoch_end(epoch)
            if extra:
                log.write(step, extra)
                last.update(extra)
                method.train()
    bar.close()
    log.close()
    method.net = net  # unwrap DDP for whoever uses the model next
    dist.barrier()
    return last


def _has_conv3d(net: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv3d) for m in net.modules())


def _maybe_no_sync(net: nn.Module, sync: bool):
    """Skip DDP's gradient all-reduce on accumulation micro-steps."""
    if not sync and isinstance(net, nn.parallel.DistributedDataParallel):
        return net.no_sync()
    return nullcontext()
