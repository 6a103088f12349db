"""The one training loop: distillation, fine-tuning and supervised training all run here.

A method (`distinit.engine.method.Method`) returns `{"loss": ..., **logs}` from `forward(batch)`
and names its trainable part `method.trainable`. The loop owns everything else: devices,
precision, DDP, optimizer, schedule, accumulation, clipping, logging, checkpoints (with the
method's own state) and exact resumption.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from distinit.config import Config, OptimConfig, save_config, to_dict
from distinit.engine import dist, run_dir
from distinit.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from distinit.engine.interrupt import Interrupted, StopRequest, signal_name
from distinit.engine.liveness import Heartbeat
from distinit.engine.method import Method
from distinit.engine.runtime import Runtime
from distinit.engine.sampler import StreamSampler
from distinit.errors import UserError


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
    # Closed form, not LinearLR/CosineAnnealingLR/StepLR in SequentialLR: their recursive updates
    # were measured to change the learning rates, so the runs, in the last bits.
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "step":
        return cfg.gamma ** int(step / max(1.0, cfg.step_epochs * steps_per_epoch))
    raise UserError(f"optim.schedule must be step or cosine, got {cfg.schedule!r}")


def planned_steps(epochs: float, steps_per_epoch: int) -> int:
    """The optimizer steps of a run of `epochs` (fractions allowed): what `train` runs and
    `distinit plan` counts."""
    return max(1, round(epochs * steps_per_epoch))


class MetricLog:
    """JSON lines and TensorBoard, written by rank 0 only."""

    def __init__(self, out_dir: Path, enabled: bool, purge_step: int | None = None):
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run hides the events logged after its checkpoint
            self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=purge_step)

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        try:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
        except OSError as e:  # a full disk: the steps after the last checkpoint run again
            raise UserError(f"cannot write {self.path}: {e.strerror or e}; the last checkpoint "
                            "in that folder is intact. Free disk space, then continue with "
                            "--resume") from None
        for k, v in values.items():
            if isinstance(v, int | float):
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


@run_dir.one_writer
def train(cfg: Config, method: Method, dataset: Dataset, *, resume: bool = False,
          overwrite: bool = False, head_prefixes: tuple[str, ...] = (),
          on_epoch_end: Callable[[int], dict] | None = None, desc: str = "train",
          checkpoint_extra: dict | None = None) -> dict:
    """Train `method.trainable` on `dataset` as `cfg` says; returns the last logged metrics.

    Checkpoints go to `cfg.out_dir/last.pt`; with `resume` the run continues from there exactly
    (weights, optimizer, schedule, step, every rank's RNG and the data order). SIGTERM and
    Ctrl-C write a checkpoint at the current step and raise `Interrupted`. `checkpoint_extra`:
    more keys of every checkpoint (a fine-tune's "classes").
    """
    ctx = dist.setup(cfg.device, cfg.dist_timeout)
    out_dir = Path(cfg.out_dir)
    ckpt_path = out_dir / "last.pt"
    run_dir.claim(out_dir, resume, overwrite)
    state = None
    if resume:
        if ckpt_path.is_file():
            state = load_checkpoint(ckpt_path)
            run_dir.check_resumable(state.get("config", {}), to_dict(cfg), ckpt_path,
                                    to_dict(type(cfg)()))
            global_batch = cfg.optim.batch_size * ctx.world * cfg.optim.accum_steps
            if state.get("global_batch", global_batch) != global_batch:
                raise UserError(f"cannot resume {ckpt_path}: its global batch was "
                                f"{state['global_batch']}, now {global_batch} (optim.batch_size "
                                "x processes x optim.accum_steps); use the run's own, or start a "
                                "new run")
        elif ctx.is_main:
            print(f"[{desc}] --resume: no checkpoint at {ckpt_path}; starting a new run",
                  flush=True)
    dist.barrier()  # every rank has looked at out_dir before rank 0 changes it
    if ctx.is_main:
        _prepare_out_dir(out_dir, cfg, overwrite, 0 if state is None else state["step"])
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed * 1000 + ctx.rank)
    rt = Runtime.of(cfg, ctx.device)
    rt.place(method, keep_layout=tuple(method.frozen))
    net = method.student
    optimizer = build_optimizer(net, cfg.optim, head_prefixes)
    if ctx.world > 1:  # only the trainable part; teachers and momentum encoders stay outside DDP
        method.trainable = nn.parallel.DistributedDataParallel(net)

    o = cfg.optim
    sampler = StreamSampler(len(dataset), o.batch_size, cfg.seed, rank=ctx.rank,
                            world=ctx.world, accum_steps=o.accum_steps, epoch_size=o.epoch_size)
    steps_per_epoch = sampler.steps_per_epoch
    if steps_per_epoch == 0:
        raise UserError(f"an epoch of {sampler.epoch_len} training samples is less than one step "
                        f"needs (global batch {sampler.global_batch} = optim.batch_size "
                        f"{o.batch_size} x {ctx.world} processes x optim.accum_steps "
                        f"{o.accum_steps}); lower optim.batch_size")
    total_steps = planned_steps(o.epochs, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [lambda s, m=g["lr_mult"]: m * lr_factor(s, steps_per_epoch, total_steps, o)
                    for g in optimizer.param_groups])

    step = 0
    if state is not None:
        net.load_state_dict(state["model"])
        method.load_method_state(state.get("method", {}))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
        if len(rngs) == ctx.world:
            set_rng_state(rngs[ctx.rank])
        elif ctx.is_main:
            print(f"[{desc}] resuming {len(rngs)} processes' run with {ctx.world}: the data order "
                  "is the same, but per-process random streams start afresh", flush=True)
        step = state["step"]
        del state
        if ctx.is_main:
            print(f"[{desc}] resuming {ckpt_path} at step {step}", flush=True)

    def checkpoint() -> None:
        # Every rank's RNG goes into the file; a failed write is reported on every rank.
        rngs = dist.gather_objects(rng_state())
        error = None
        if ctx.is_main:
            try:
                save_checkpoint({"model": net.state_dict(), "method": method.method_state(),
                                 "backbone": _backbone(method),
                                 "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "step": step,
                                 "total_steps": total_steps,
                                 "global_batch": sampler.global_batch, "rng": rngs,
                                 "config": to_dict(cfg), "job": desc,
                                 **(checkpoint_extra or {})}, ckpt_path)
            except UserError as e:
                error = str(e)
        error = dist.broadcast_object(error)
        if error:
            raise UserError(error)

    method.begin(total_steps)
    log = MetricLog(out_dir, ctx.is_main, purge_step=step + 1 if step else None)
    stop_at = min(total_steps, cfg.stop_after) if cfg.stop_after > 0 else total_steps
    last: dict = {}
    interactive = ctx.is_main and sys.stderr.isatty()
    bar = tqdm(total=stop_at, initial=step, desc=desc, disable=not interactive, unit="step",
               dynamic_ncols=True)
    method.train()
    t0, seen = time.perf_counter(), 0
    # One loader for the run: its workers persist across epochs, so what they cache (decoded
    # videos with data.cache=memory, open files) lasts. Items draw their randomness from (seed,
    # pass, index), not from worker seeds; the workers' own generator is seeded anyway, not
    # taken from the global RNG, so building the loader changes nothing a resumed run draws.
    loader = make_loader(dataset, cfg, sampler, ctx.device)
    resume_hint = (f"the last checkpoint in {out_dir} is intact: run the same command with "
                   "--resume auto once every node is back")
    with StopRequest(announce=ctx.is_main) as stop, Heartbeat(then=resume_hint):
        while step < stop_at:
            epoch = step // steps_per_epoch
            sampler.set_step(step)
            replaced = torch.zeros(1)
            batches = iter(loader)
            while step < stop_at:
                micro = [b for _, b in zip(range(o.accum_steps), batches)]
                if len(micro) < o.accum_steps:
                    break  # end of the epoch
                for b in micro:
                    replaced += b.get("bad", torch.zeros(1)).sum()
                out, finite = accumulate(method, micro, ctx, rt)
                flags = dist.all_reduce_max(torch.tensor([float(not finite), float(stop.signum)]))
                if flags[0]:
                    raise UserError(
                        f"the loss is not finite at step {step} (epoch {epoch}); the last "
                        f"checkpoint in {out_dir} is intact. Lower optim.lr, set "
                        "optim.clip_grad, or use precision=fp32, and start again (--overwrite "
                        "or another out_dir)")
                grad_norm = (nn.utils.clip_grad_norm_(net.parameters(), o.clip_grad)
                             if o.clip_grad > 0 else None)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                method.after_step(step)
                seen += sampler.global_batch
                bar.update(1)
                if step % cfg.log_every == 0 or step == stop_at:
                    rate = seen / (time.perf_counter() - t0)
                    last = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                            "samples_per_s": round(rate, 2),
                            **{k: float(v.detach() if torch.is_tensor(v) else v)
                               for k, v in out.items()}}
                    if grad_norm is not None:
                        last["grad_norm"] = float(grad_norm)
                    log.write(step, last)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", rate=f"{rate:.1f}/s")
                    if ctx.is_main and not interactive:
                        print(f"[{desc}] step {step}/{stop_at} epoch {epoch} loss "
                              f"{last['loss']:.4f} {rate:.1f} samples/s", flush=True)
                if step % cfg.ckpt_every == 0 or step == stop_at or flags[1]:
                    checkpoint()
                if flags[1]:
                    bar.close()
                    log.close()
                    name = signal_name(int(flags[1]))
                    # What to do next depends on the command (`--resume`, or the same
                    # command again for a chain): `distinit.cli` adds it.
                    raise Interrupted(f"stopped by {name} at step {step}/{stop_at}; checkpoint "
                                      f"written to {ckpt_path}", int(flags[1]))
                if step % steps_per_epoch == 0:
                    break
            del batches  # the workers, idle, wait for the next epoch
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
    del loader  # shuts its workers down
    bar.close()
    log.close()
    method.trainable = net  # unwrap DDP for whoever uses the model next
    dist.barrier()
    return last


def make_loader(dataset: Dataset, cfg: Config, sampler, device: torch.device) -> DataLoader:
    """The run's one loader: persistent workers (`data.num_workers`), 4 batches prefetched per
    worker, pinned memory when training on a GPU."""
    workers = cfg.data.num_workers
    return DataLoader(dataset, batch_size=cfg.optim.batch_size, sampler=sampler, drop_last=True,
                      num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=device.type == "cuda",
                      prefetch_factor=4 if workers > 0 else None,
                      generator=torch.Generator().manual_seed(cfg.seed * 100_003))


def accumulate(method: Method, micro: list[dict], ctx: dist.DistContext,
                rt: Runtime) -> tuple[dict, bool]:
    """Forward and backward over the micro-batches of one optimizer step.

    A method with `prepare(batch)` first computes, for every micro-batch, what its loss needs
    from the whole global batch (e.g. how many examples the entropy filter keeps); the sums of
    `batch["counts"]` over all micro-batches and ranks, divided by their number, come back in
    `batch["counts"]`, so a loss normalised by them is a mean over the global batch.
    Returns the last micro-batch's outputs and whether every loss was finite.
    """
    micro = [rt.batch(b) for b in micro]
    prepare = getattr(method, "prepare", None)
    if prepare is not None:
        with rt.autocast(), torch.no_grad():
            micro = [prepare(b) for b in micro]
        counts = dist.all_reduce_sum(torch.stack([b["counts"] for b in micro]).sum(0))
        for b in micro:
            b["counts"] = counts / (len(micro) * ctx.world)
    finite = True
    out: dict = {}
    for i, b in enumerate(micro):
        sync = i == len(micro) - 1
        with _maybe_no_sync(method.trainable, sync), rt.autocast():
            out = method(b)
            loss = out["loss"]
        finite = finite and bool(torch.isfinite(loss))
        (loss / len(micro)).backward()
    return out, finite


def _prepare_out_dir(out_dir: Path, cfg: Config, overwrite: bool, resume_step: int) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if overwrite:
            run_dir.clear(out_dir)
        run_dir.truncate_metrics(out_dir / "metrics.jsonl", resume_step)
        save_config(cfg, out_dir / "config.yaml")
    except OSError as e:
        raise UserError(f"cannot write to out_dir {out_dir}: {e.strerror or e}; choose a "
                        "writable out_dir=") from None


def _backbone(method: Method) -> dict | None:
    """What fine-tuning loads (tensors shared with "model": torch.save stores them once)."""
    try:
        return method.backbone_state_dict()
    except NotImplementedError:
        return None




def _maybe_no_sync(net: nn.Module, sync: bool):
    """Skip DDP's gradient all-reduce on accumulation micro-steps."""
    if not sync and isinstance(net, nn.parallel.DistributedDataParallel):
        return net.no_sync()
    return nullcontext()
