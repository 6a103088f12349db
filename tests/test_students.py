import sys

import pytest
import torch
import torch.nn as nn

from distinit.errors import UserError
from distinit.models.students import (
    STUDENTS,
    TINY,
    build_student,
    feature_dim,
    forward_features,
    midplanes,
)
from distinit.optional import import_torchvision

# Narrow but full-depth: r2plus1d_34 keeps its 3-4-6-3 blocks.
SMALL = {"width": 8, "stem_stride": 1, "stem_kernel": (3, 3)}


def torchvision_or_skip():
    try:
        return import_torchvision()
    except ImportError:
        pytest.skip("torchvision is not installed")


def randomize_bn(model: nn.Module) -> None:
    # Non-trivial BN statistics, so eval-mode comparisons exercise the buffers too.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_forward_shapes_and_gradients(name):
    torch.manual_seed(0)
    model = build_student(name, num_classes=5, **SMALL)
    x = torch.randn(2, 3, 8, 32, 32, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 5)
    assert model.feature_dim == 64
    assert model.forward_features(x).shape == (2, model.feature_dim)
    logits.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert model.stem[0].weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_published_parameter_counts():
    counts = {"r3d_18": 33_371_472, "mc3_18": 11_695_440, "r2plus1d_18": 31_505_325}
    for name, expected in counts.items():
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = build_student(name)
        assert sum(p.numel() for p in model.parameters()) == expected, name


def test_r2plus1d_34_matches_torchvision_design():
    tv = torchvision_or_skip()
    r = tv.models.video.resnet
    with torch.device("meta"):
        ref = r.VideoResNet(r.BasicBlock, [r.Conv2Plus1D] * 4, [3, 4, 6, 3], r.R2Plus1dStem)
        ours = build_student("r2plus1d_34")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("name", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_torchvision_weights_load_strictly_and_agree(name):
    tv = torchvision_or_skip()
    torch.manual_seed(0)
    ref = getattr(tv.models.video, name)(num_classes=7)
    randomize_bn(ref)
    ref.eval()
    ours = build_student(name, num_classes=7).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)


def test_midplanes_formula():
    # R(2+1)D keeps the 3x3x3 parameter count: t*d^2*Ni*No / (d^2*Ni + t*No).
    assert midplanes(64, 64) == 144
    assert midplanes(64, 128) == 230


def test_reset_head_and_zero_init_residual():
    model = build_student("r3d_18", num_classes=5, zero_init_residual=True, **TINY)
    assert all(not m.conv2[1].weight.any() for layer in (model.layer1, model.layer4) for m in layer)
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 5)
    model.reset_head(11)
    assert model.fc.out_features == 11 and model.feature_dim == 128
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 11)


def test_stem_options_set_kernel_stride_and_channels():
    model = build_student("r3d_18", in_channels=2, stem_kernel=(5, 3), stem_stride=1, width=8)
    assert model.stem[0].weight.shape == (8, 2, 5, 3, 3)
    assert model.stem[0].stride == (1, 1, 1)
    r21 = build_student("r2plus1d_18", width=16)
    assert r21.stem[0].weight.shape == (11, 3, 1, 7, 7)  # 45 at width 64, scaled
    assert r21.stem[3].weight.shape == (16, 11, 3, 1, 1)
    with pytest.raises(UserError, match="stem_kernel"):
        build_student("r3d_18", stem_kernel=(3, 7, 7))


def test_r2plus1d_10_is_one_block_per_stage():
    """auxSKD's backbone: R(2+1)D with (1, 1, 1, 1) blocks, R(2+1)D-18's stem and convs."""
    net = build_student("r2plus1d_10", num_classes=0, **SMALL)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    ref = build_student("r2plus1d_18", num_classes=0, layers=[1, 1, 1, 1], **SMALL)
    assert [tuple(p.shape) for p in net.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    assert forward_features(net, torch.randn(2, 3, 4, 16, 16)).shape == (2, feature_dim(net))


def test_unknown_student_lists_valid_names():
    with pytest.raises(UserError, match="r3d_18.*mc3_18.*r2plus1d_18.*r2plus1d_10.*r2plus1d_34"):
        build_student("r3d_50")
    with pytest.raises(UserError, match=r"bad options \['depth'\]; valid: width, layers"):
        build_student("r3d_18", depth=3)


CUSTOM = '''
import torch.nn as nn


class Pooled(nn.Module):
    """Returns pooled features (B, D) from forward, no feature_dim attribute."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv3d(3, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean((2, 3, 4))


class MapWithFeatures(nn.Module):
    """Has forward_features returning a feature map, and a feature_dim attribute."""

    feature_dim = 6

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 6, 1)

    def forward_features(self, x):
        return self.conv(x)

    def forward(self, x):
        raise AssertionError("forward_features must be used")


def pooled(channels=4):
    return Pooled(channels)


def with_features():
    return MapWithFeatures()


def not_a_module():
    return 3
'''


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    name = "distinit_test_custom_students"
    (tmp_path / f"{name}.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_custom_student_from_module_path(custom_module):
    x = torch.randn(2, 3, 4, 16, 16)
    model = build_student(f"{custom_module}:pooled", num_classes=5, channels=7)
    assert model.feature_dim == 7 and feature_dim(model) == 7
    assert model(x).shape == (2, 5)
    assert forward_features(model, x).shape == (2, 7)
    model.reset_head(3)
    assert model(x).shape == (2, 3)

    mapped = build_student(f"{custom_module}:with_features", num_classes=2)
    assert mapped.feature_dim == 6
    feats = mapped.forward_features(x)
    torch.testing.assert_close(feats, mapped.backbone.conv(x).mean((2, 3, 4)))
    assert mapped(x).shape == (2, 2)


def test_feature_helpers_on_a_raw_module_keep_its_mode(custom_module):
    module = sys.modules.get(custom_module) or __import__(custom_module)
    raw = nn.Sequential(nn.Conv3d(3, 5, 1), nn.BatchNorm3d(5))
    raw.train()
    assert feature_dim(raw, sample_shape=(1, 3, 2, 8, 8)) == 5
    assert raw.training and int(raw[1].num_batches_tracked) == 0  # the probe ran in eval mode
    assert feature_dim(module.pooled(3)) == 3


def test_custom_student_errors(custom_module):
    with pytest.raises(UserError, match="cannot import module 'no_such_pkg_xyz.models'"):
        build_student("no_such_pkg_xyz.models:net")
    with pytest.raises(UserError, match="no callable 'missing'"):
        build_student(f"{custom_module}:missing")
    with pytest.raises(UserError, match="not a torch nn.Module"):
        build_student(f"{custom_module}:not_a_module")
    with pytest.raises(UserError, match="failed"):
        build_student(f"{custom_module}:pooled", depth=3)
