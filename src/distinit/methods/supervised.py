"""Supervised training with labels: fine-tuning, supervised pretraining, image teachers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distinit.engine.method import Method


class Supervised(Method):
    """Cross-entropy on `batch[input_key]` -> `batch["label"]`; the model is `trainable`."""

    def __init__(self, net: nn.Module, input_key: str = "video", label_smoothing: float = 0.0):
        super().__init__(net)
        self.input_key, self.label_smoothing = input_key, label_smoothing

    def forward(self, batch: dict) -> dict:
        logits = self.trainable(batch[self.input_key])
        labels = batch["label"]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return {"loss": loss, "acc": (logits.argmax(-1) == labels).float().mean()}

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        # The classifier is `fc` in every student (timm's and torchvision's convention); a
        # fine-tune on another label set replaces it.
        return {k: v for k, v in self.student.state_dict().items() if not k.startswith("fc.")}
