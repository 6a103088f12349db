"""Video students: R3D, MC3 and R(2+1)D ResNets as one class, plus user-supplied architectures.

Parameter names and shapes match torchvision's `models.video.resnet` (so its Kinetics weights
load with strict=True), without importing torchvision. The variants differ only in data: the
list of conv makers per stage and the stem. `width`, `layers` and `stem_stride` scale a variant
down for CPU; `TINY` is the scaled shape that matches the 2D `resnet_tiny` for inflation.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from distinit.errors import UserError, first_line

# A CPU-sized student shaped like `image_resnet.resnet_tiny` (widths 16-128, one block per
# stage, 3x3 stride-1 stem): for 32x32 inputs and for inflation from that 2D model.
TINY = {"width": 16, "layers": [1, 1, 1, 1], "stem_stride": 1, "stem_kernel": (3, 3)}


def midplanes(inplanes: int, planes: int) -> int:
    """R(2+1)D's intermediate width: the (2+1)D block has the parameter count of a 3x3x3 conv."""
    return (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)


class Conv3DSimple(nn.Conv3d):
    """Full 3x3x3 convolution (R3D)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None,
                 stride: int = 1, padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(3, 3, 3), stride=stride,
                         padding=padding, bias=False)

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


class Conv3DNoTemporal(nn.Conv3d):
    """1x3x3 convolution: a 2D conv applied per frame (MC3's upper stages)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None,
                 stride: int = 1, padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                         padding=(0, padding, padding), bias=False)

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return 1, stride, stride


class Conv2Plus1D(nn.Sequential):
    """(2+1)D convolution: 1x3x3 spatial, BN, ReLU, then 3x1x1 temporal."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                      padding=(0, padding, padding), bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                      padding=(padding, 0, 0), bias=False),
        )

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


ConvMaker = type[Conv3DSimple] | type[Conv3DNoTemporal] | type[Conv2Plus1D]


class BasicBlock(nn.Module):
    """Two convs with a residual; each conv and its BN share a Sequential (torchvision names)."""

    def __init__(self, inplanes: int, planes: int, conv_builder: ConvMaker, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        # torchvision computes one midplanes from (inplanes, planes) for both convs; keep it so
        # the parameter shapes match its checkpoints.
        mid = midplanes(inplanes, planes)
        self.conv1 = nn.Sequential(conv_builder(inplanes, planes, mid, stride),
                                   nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv_builder(planes, planes, mid), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


class BasicStem(nn.Sequential):
    """Conv (kt x k x k) - BN - ReLU; torchvision's default is 3x7x7, spatial stride 2."""

    def __init__(self, in_channels: int = 3, width: int = 64, kernel: tuple[int, int] = (3, 7),
                 stride: int = 2) -> None:
        kt, ks = kernel
        super().__init__(
            nn.Conv3d(in_channels, width, kernel_size=(kt, ks, ks), stride=(1, stride, stride),
                      padding=(kt // 2, ks // 2, ks // 2), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )


class R2Plus1dStem(nn.Sequential):
    """Factorised stem: 1 x k x k spatial conv to 45 channels (at width 64), then kt x 1 x 1."""

    def __init__(self, in_channels: int = 3, width: int = 64, kernel: tuple[int, int] = (3, 7),
                 stride: int = 2) -> None:
        kt, ks = kernel
        mid = max(1, 45 * width // 64)  # torchvision's fixed 45, scaled with the width
        super().__init__(
            nn.Conv3d(in_channels, mid, kernel_size=(1, ks, ks), stride=(1, stride, stride),
                      padding=(0, ks // 2, ks // 2), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, width, kernel_size=(kt, 1, 1), padding=(kt // 2, 0, 0), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )


class VideoResNet(nn.Module):
    """ResNet on clips (B, C, T, H, W): stem, four stages, spatiotemporal average pool, fc."""

    def __init__(self, conv_makers: Sequence[ConvMaker], layers: Sequence[int],
                 stem: type[BasicStem] | type[R2Plus1dStem], num_classes: int = 400,
                 width: int = 64, stem_stride: int = 2, stem_kernel: Sequence[int] = (3, 7),
                 in_channels: int = 3, zero_init_residual: bool = False) -> None:
        super().__init__()
        if len(conv_makers) != 4 or len(layers) != 4:
            raise UserError(f"a video ResNet has 4 stages; got layers={list(layers)}")
        if len(stem_kernel) != 2:
            raise UserError(f"stem_kernel is (temporal, spatial), e.g. (3, 7); got {stem_kernel}")
        kt, ks = stem_kernel
        self.stem = stem(in_channels, width, (kt, ks), stem_stride)
        self.inplanes = width
        self.layer1 = self._make_layer(conv_makers[0], width, layers[0], stride=1)
        self.layer2 = self._make_layer(conv_makers[1], width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(conv_makers[2], width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(conv_makers[3], width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.feature_dim = width * 8
        # num_classes=0: no classifier (timm's convention), for methods that put their own heads
        # on the features; an unused fc would get no gradient and break DDP.
        self.fc = _classifier(self.feature_dim, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self._init_fc()
        if zero_init_residual:
            # Each block starts as the identity: its last BN's gamma is zero.
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.conv2[1].weight)

    def _make_layer(self, conv_builder: ConvMaker, planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes, kernel_size=1,
                          stride=conv_builder.get_downsample_stride(stride), bias=False),
                nn.BatchNorm3d(planes),
            )
        layers = [BasicBlock(self.inplanes, planes, conv_builder, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, conv_builder) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_fc(self) -> None:
        if isinstance(self.fc, nn.Linear):
            nn.init.normal_(self.fc.weight, 0, 0.01)
            nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) clips -> (B, D) features averaged over time and space."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, D, T', H', W')
        return self.avgpool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) clips -> (B, num_classes) logits."""
        return self.fc(self.forward_features(x))

    def reset_head(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one (for fine-tuning)."""
        self.fc = _classifier(self.feature_dim, num_classes).to(self.stem[0].weight.device)
        self._init_fc()


def _classifier(dim: int, num_classes: int) -> nn.Module:
    return nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()


def r3d_18(num_classes: int = 400, **kwargs) -> VideoResNet:
    """Res3D-18: full 3x3x3 convs throughout."""
    kwargs.setdefault("layers", [2, 2, 2, 2])
    return VideoResNet([Conv3DSimple] * 4, stem=BasicStem, num_classes=num_classes, **kwargs)


def mc3_18(num_classes: int = 400, **kwargs) -> VideoResNet:
    """MC3-18: 3D convs in the first stage, per-frame 2D convs in the others."""
    kwargs.setdefault("layers", [2, 2, 2, 2])
    return VideoResNet([Conv3DSimple] + [Conv3DNoTemporal] * 3, stem=BasicStem,
                       num_classes=num_classes, **kwargs)


def r2plus1d_18(num_classes: int = 400, **kwargs) -> VideoResNet:
    """R(2+1)D-18: every 3D conv factorised into spatial then temporal."""
    kwargs.setdefault("layers", [2, 2, 2, 2])
    return VideoResNet([Conv2Plus1D] * 4, stem=R2Plus1dStem, num_classes=num_classes, **kwargs)


def r2plus1d_10(num_classes: int = 400, **kwargs) -> VideoResNet:
    """R(2+1)D with one block per stage: auxSKD's working backbone (Plrbear/auxSKD
    auxSKD/train.py:120, `r21d.R2Plus1DNet((1, 1, 1, 1))`, its `--model` default r21d)."""
    kwargs.setdefault("layers", [1, 1, 1, 1])
    return VideoResNet([Conv2Plus1D] * 4, stem=R2Plus1dStem, num_classes=num_classes, **kwargs)


def r2plus1d_34(num_classes: int = 400, **kwargs) -> VideoResNet:
    """R(2+1)D-34: the 18-layer design with ResNet-34's 3-4-6-3 blocks."""
    kwargs.setdefault("layers", [3, 4, 6, 3])
    return VideoResNet([Conv2Plus1D] * 4, stem=R2Plus1dStem, num_classes=num_classes, **kwargs)


# What the registered builders accept besides num_classes.
OPTIONS = ("width", "layers", "stem_stride", "stem_kernel", "in_channels", "zero_init_residual")

STUDENTS: dict[str, Callable[..., VideoResNet]] = {
    "r3d_18": r3d_18,
    "mc3_18": mc3_18,
    "r2plus1d_18": r2plus1d_18,
    "r2plus1d_10": r2plus1d_10,
    "r2plus1d_34": r2plus1d_34,
}


def _pool(features: torch.Tensor) -> torch.Tensor:
    # A custom backbone may return a feature map (B, D, ...); average it to (B, D).
    return features.flatten(2).mean(-1) if features.dim() > 2 else features


def forward_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, D) with any student: `forward_features` if it has one, else forward."""
    fn = getattr(model, "forward_features", None)
    return _pool(fn(x) if callable(fn) else model(x))


def feature_dim(model: nn.Module, sample_shape: Sequence[int] = (1, 3, 8, 112, 112)) -> int:
    """D of `forward_features(model, x)`: the `feature_dim` attribute, else one dummy forward."""
    dim = getattr(model, "feature_dim", None)
    if isinstance(dim, int):
        return dim
    param = next(model.parameters(), None)
    x = torch.zeros(*sample_shape, device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()  # no BN statistics update from the probe
    try:
        with torch.no_grad():
            return forward_features(model, x).shape[1]
    finally:
        model.train(was_training)


class BackboneWithHead(nn.Module):
    """A user's feature extractor with a linear classifier, giving it the VideoResNet interface."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim(backbone)
        self.fc = _classifier(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return forward_features(self.backbone, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))

    def reset_head(self, num_classes: int) -> None:
        device = next(self.backbone.parameters()).device
        self.fc = _classifier(self.feature_dim, num_classes).to(device)


def import_callable(spec: str, what: str = "student", error: type[UserError] = UserError,
                    shown: str = "", noun: str = "callable") -> Callable[..., nn.Module]:
    """The function `package.module:function` names (a student's or a `python:` teacher's);
    `error` (a UserError) naming `what` and `shown` (default `spec`) when the module does not
    import or has no such function."""
    module_name, _, attr = spec.partition(":")
    spec = shown or spec
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise error(f"{what} {spec!r}: cannot import module {module_name!r} ({e}); "
                    "put its folder on PYTHONPATH or install its package") from None
    except SystemExit as e:  # its own script code, run on import: would end the run silently
        raise error(f"{what} {spec!r}: module {module_name!r} called sys.exit({e.code!r}) as it "
                    "was imported; guard its script code with `if __name__ == \"__main__\":`"
                    ) from None
    except Exception as e:
        raise error(f"{what} {spec!r}: importing module {module_name!r} raised "
                    f"{first_line(e)}{_where(e)}; fix the module") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise error(f"{what} {spec!r}: module {module_name!r} has no {noun} {attr!r}")
    return fn


def _where(error: BaseException) -> str:
    """` (at FILE:LINE)`: the innermost frame of `error`'s traceback."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})" if tb is not None else ""


def build_student(name: str, num_classes: int = 400, **kwargs) -> nn.Module:
    """A registered student (`STUDENTS`) or a user's `package.module:function`.

    kwargs go to the builder (`OPTIONS` for registered students). A user's function gets only kwargs and returns
    a module mapping (B, C, T, H, W) to features (B, D) (or a feature map, which is averaged);
    it is given a linear head of `num_classes` outputs.
    """
    if name in STUDENTS:
        unknown = sorted(set(kwargs) - set(OPTIONS))
        if unknown:
            raise UserError(f"student {name!r}: bad options {unknown}; valid: {', '.join(OPTIONS)}")
        return STUDENTS[name](num_classes=num_classes, **kwargs)
    if ":" not in name:
        raise UserError(f"unknown student {name!r}; valid names: {', '.join(STUDENTS)}, "
                        "or 'package.module:function' for your own architecture")
    fn = import_callable(name)
    try:
        backbone = fn(**kwargs)
    except TypeError as e:
        raise UserError(f"student {name!r}: calling it with {sorted(kwargs)} failed ({e})") from None
    if not isinstance(backbone, nn.Module):
        raise UserError(f"student {name!r} returned {type(backbone).__name__}, not a torch "
                        "nn.Module")
    return BackboneWithHead(backbone, num_classes)
