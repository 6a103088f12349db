"""The contract between a training method and the one training loop (`distinit.engine.train`).

In the spirit of timm's `TrainingTask`: a method is an `nn.Module` that owns everything its
objective needs, and tells the loop which part to optimise.

- `trainable` is the only submodule the loop optimises and wraps in DDP.
- Frozen submodules (teachers) are registered with `freeze()`: no gradients, always in eval
  mode, moved with `.to()`, never in DDP or the optimizer. Momentum encoders and queues are
  plain submodules and buffers with `requires_grad=False`; they stay in train mode.
- `forward(batch)` returns `{"loss": ..., **logs}`; an optional `prepare(batch)` runs under
  no_grad before it (see `train.accumulate`).
- `after_step(step)` runs after each optimizer step (momentum updates, queue maintenance).
- `method_state()` is what a checkpoint needs beyond `trainable` for an exact `--resume`
  (momentum encoders, queues, pointers); frozen modules rebuilt from the config are left out.
- `backbone_state_dict()` is what fine-tuning loads; no other module knows a method's prefixes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from distinit.errors import UserError


class Method(nn.Module):
    def __init__(self, trainable: nn.Module):
        super().__init__()
        self.trainable = trainable
        self.frozen: list[str] = []

    @property
    def student(self) -> nn.Module:
        """`trainable` without its DDP wrapper."""
        return getattr(self.trainable, "module", self.trainable)

    def freeze(self, name: str, module: nn.Module) -> nn.Module:
        """Register `module` as a frozen submodule `name`: eval mode, no gradients, not saved."""
        for p in module.parameters():
            p.requires_grad_(False)
        setattr(self, name, module.eval())
        self.frozen.append(name)
        return module

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        for name in self.frozen:  # a teacher's batch norm must never use batch statistics
            getattr(self, name).eval()
        return self

    def begin(self, total_steps: int) -> None:
        """Called once before training starts or resumes, with the run's length in optimizer
        steps (what a schedule over the run, such as a momentum schedule, needs)."""

    def after_step(self, step: int) -> None:
        """Called after optimizer step `step` (1-based)."""

    def method_state(self) -> dict[str, torch.Tensor]:
        skip = ("trainable.", *(f"{n}." for n in self.frozen))
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    def load_method_state(self, state: dict[str, torch.Tensor]) -> None:
        own = self.method_state()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise UserError(f"the checkpoint's method state does not match this method "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); resume with "
                            "the method and config that wrote it")
        self.load_state_dict(state, strict=False)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The video backbone's weights, as `model.init=checkpoint` loads them."""
        raise NotImplementedError


@dataclass
class Pretraining:
    """What a method plugin's `build(cfg)` hands the loop: the method, its data recipe (a dataset
    whose samples are dicts of the views the method reads), what to measure after each epoch,
    and the results to write when training ends."""

    method: Method
    dataset: Dataset
    on_epoch_end: Callable[[int], dict] | None = None
    finish: Callable[[dict], dict] | None = None  # (the loop's last logs) -> results.json
