"""Still-image ResNets with torchvision's parameter names, for teachers and inflation sources.

`resnet18/34/50` are torchvision's architectures (their checkpoints load with strict=True).
`resnet_tiny` is the CPU-sized teacher of the synthetic world: widths 16-32-64-128, one
BasicBlock per stage and a small-input stem (3x3 stride-1 conv, no max-pool). Its parameter
names are the standard ones, so it inflates into `students.TINY` students like ResNet-18 into
R3D-18.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from distinit.errors import UserError


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's ResNet v1.5), 1x1 expand."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + residual)


class ImageResNet(nn.Module):
    """ResNet on images (B, C, H, W) -> logits (B, num_classes)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 num_classes: int = 1000, width: int = 64, small_input: bool = False,
                 in_channels: int = 3, zero_init_residual: bool = False,
                 stem_stride: int = 1) -> None:
        super().__init__()
        if len(layers) != 4:
            raise UserError(f"an image ResNet has 4 stages; got layers={list(layers)}")
        if small_input:
            # For 32-64 px inputs: a 7x7/2 conv plus max-pool would leave too little resolution.
            # stem_stride 2 quarters the compute at 32 px; the video students mirror it.
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stem_stride, padding=1,
                                   bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = width
        self.layer1 = self._make_layer(block, width, layers[0], stride=1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def feature_dim(self) -> int:
        return self.fc.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, D) spatially averaged features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, D, H', W')
        return self.avgpool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def resnet18(num_classes: int = 1000, **kwargs) -> ImageResNet:
    kwargs.setdefault("layers", [2, 2, 2, 2])
    return ImageResNet(BasicBlock, num_classes=num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ImageResNet:
    kwargs.setdefault("layers", [3, 4, 6, 3])
    return ImageResNet(BasicBlock, num_classes=num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ImageResNet:
    kwargs.setdefault("layers", [3, 4, 6, 3])
    return ImageResNet(Bottleneck, num_classes=num_classes, **kwargs)


def resnet_tiny(num_classes: int = 1000, **kwargs) -> ImageResNet:
    """Widths 16-32-64-128, one BasicBlock per stage, 3x3 stride-1 stem without max-pool."""
    kwargs.setdefault("layers", [1, 1, 1, 1])
    kwargs.setdefault("width", 16)
    kwargs.setdefault("small_input", True)
    return ImageResNet(BasicBlock, num_classes=num_classes, **kwargs)


IMAGE_MODELS: dict[str, Callable[..., ImageResNet]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet_tiny": resnet_tiny,
}


# What the registered builders accept besides num_classes.
OPTIONS = ("width", "layers", "small_input", "in_channels", "zero_init_residual", "stem_stride")


def build_image_model(name: str, num_classes: int = 1000, **kwargs) -> ImageResNet:
    """A registered image ResNet; kwargs from `OPTIONS`."""
    if name not in IMAGE_MODELS:
        raise UserError(f"unknown image model {name!r}; valid names: {', '.join(IMAGE_MODELS)}")
    unknown = sorted(set(kwargs) - set(OPTIONS))
    if unknown:
        raise UserError(f"image model {name!r}: bad options {unknown}; valid: {', '.join(OPTIONS)}")
    return IMAGE_MODELS[name](num_classes=num_classes, **kwargs)
