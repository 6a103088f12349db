"""Supervised training with labels: fine-tuning, supervised pretraining, image teachers."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class Supervised(nn.Module):
    """Cross-entropy on `batch[input_key]` -> `batch["label"]`. `net` is the trainable model."""

    def __init__(self, net: nn.Module, input_key: str = "video", label_smoothing: float = 0.0):
        super().__init__()
        self.net, self.input_key, self.label_smoothing = net, input_key, label_smoothing

    def forward(self, batch: dict) -> dict:
        logits = self.net(batch[self.input_key])
        labels = batch["label"]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return {"loss": loss, "acc": (logits.argmax(-1) == labels).float().mean()}
