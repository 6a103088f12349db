import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from distinit.errors import UserError
from distinit.models.image_resnet import build_image_model
from distinit.models.inflate import (
    InflationError,
    inflate_from_2d,
    inflate_from_file,
    inflate_kernel,
    student_key,
)
from distinit.models.students import TINY, build_student
from distinit.models.teachers import teacher_checkpoint


def trained_looking_2d(name: str, **kwargs) -> nn.Module:
    """A 2D ResNet with non-trivial BN statistics and affine parameters, in eval mode."""
    torch.manual_seed(0)
    model = build_image_model(name, num_classes=7, **kwargs)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.num_batches_tracked.fill_(100)
    return model.eval()


def valid_steps(conv: nn.Conv3d, t_in: int) -> list[int]:
    """Output time steps whose temporal window lies inside the clip (no zero padding read)."""
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    t_out = (t_in + 2 * p - k) // s + 1
    return [t for t in range(t_out) if t * s - p >= 0 and t * s - p + k - 1 <= t_in - 1]


def test_name_map_follows_torchvision_video_resnet():
    assert student_key("conv1.weight") == "stem.0.weight"
    assert student_key("bn1.running_var") == "stem.1.running_var"
    assert student_key("layer2.1.conv2.weight") == "layer2.1.conv2.0.weight"
    assert student_key("layer3.0.bn1.bias") == "layer3.0.conv1.1.bias"
    assert student_key("layer4.0.downsample.1.weight") == "layer4.0.downsample.1.weight"
    assert student_key("fc.weight") is None
    student_keys = set(build_student("r3d_18", **TINY).state_dict())
    mapped = {student_key(k) for k in build_image_model("resnet_tiny").state_dict()} - {None}
    assert mapped == {k for k in student_keys if not k.startswith("fc.")}


def test_inflated_kernel_is_the_2d_kernel_over_time_divided_by_t():
    w = torch.randn(4, 3, 7, 7)
    w3 = inflate_kernel(w, 3)
    assert w3.shape == (4, 3, 3, 7, 7)
    for t in range(3):
        torch.testing.assert_close(w3[:, :, t], w / 3)
    torch.testing.assert_close(w3.sum(2), w)


@pytest.mark.parametrize(("name_2d", "name_3d", "kwargs_3d"), [
    ("resnet18", "r3d_18", {}),
    ("resnet_tiny", "mc3_18", TINY),
])
def test_each_inflated_conv_reproduces_its_2d_conv_on_a_still_clip(name_2d, name_3d, kwargs_3d):
    model_2d = trained_looking_2d(name_2d)
    student = build_student(name_3d, num_classes=5, **kwargs_3d)
    report = inflate_from_2d(student, model_2d.state_dict())
    convs_3d = dict(student.named_modules())
    checked = 0
    T = 6
    for name, conv2 in model_2d.named_modules():
        if not isinstance(conv2, nn.Conv2d):
            continue
        conv3 = convs_3d[student_key(f"{name}.weight").removesuffix(".weight")]
        assert isinstance(conv3, nn.Conv3d)
        frame = torch.randn(2, conv2.in_channels, 9, 9)
        clip = frame.unsqueeze(2).expand(-1, -1, T, -1, -1)  # (B, C, T, H, W), one still frame
        with torch.no_grad():
            out2 = conv2(frame)  # (B, C', H', W')
            out3 = conv3(clip)  # (B, C', T', H', W')
        steps = valid_steps(conv3, T)
        assert steps, name
        # A 3D conv sums T x more float32 products in another order: rounding grows with the
        # outputs' size and the fan-in, so the tolerance is relative to the largest output (a
        # wrong inflation is off by a factor, not by rounding).
        atol = 1e-5 * max(1.0, float(out2.abs().max()))
        for t in steps:
            torch.testing.assert_close(out3[:, :, t], out2, rtol=1e-4, atol=atol)
        if conv3.kernel_size[0] > 1:
            # At the border the kernel reads zero padding: the inflated net is not the 2D one there.
            assert not torch.allclose(out3[:, :, 0], out2, atol=1e-3), name
        checked += 1
    assert checked == len(report.inflated) == 12 + 8 * (name_2d == "resnet18")
    assert report.skipped == ["fc.weight", "fc.bias"]
    assert report.missing == ["fc.weight", "fc.bias"]
    assert int(student.layer1[0].conv1[1].num_batches_tracked) == 100


@pytest.mark.parametrize(("name", "frames", "exact"), [
    # MC3: only the stem and layer1 convolve in time; each temporal 3-tap conv spoils one more
    # frame at each border (stem, layer1.conv1, layer1.conv2), leaving frames 3-4 of 8.
    ("mc3_18", 8, slice(3, 5)),
    # R3D also strides in time (layers 2-4) and every strided conv's first output reads the
    # padding. Tracking the exact interval conv by conv: 64 frames -> [1, 62] after the stem,
    # [3, 60] after layer1, [3, 28] of 32, [3, 12] of 16, [3, 4] of 8 after layer4.
    ("r3d_18", 64, slice(3, 5)),
])
def test_inflated_network_equals_2d_network_on_a_still_clip(name, frames, exact):
    model_2d = trained_looking_2d("resnet_tiny")
    student = build_student(name, num_classes=5, **TINY)
    inflate_from_2d(student, model_2d.state_dict())
    student.eval()
    frame = torch.rand(2, 3, 16, 16)
    clip = frame.unsqueeze(2).expand(-1, -1, frames, -1, -1).contiguous()  # (B, 3, T, 16, 16)
    with torch.no_grad():
        features_2d = model_2d.forward_features(frame)  # (B, 128)
        x = student.stem(clip)
        x = student.layer4(student.layer3(student.layer2(student.layer1(x))))  # (B, 128, T', 2, 2)
        per_step = x.mean((3, 4))  # (B, 128, T')
        pooled = student.forward_features(clip)
    assert per_step.shape[2] == 8
    for t in range(exact.start, exact.stop):
        torch.testing.assert_close(per_step[:, :, t], features_2d, rtol=1e-4, atol=1e-5)
    # The clip-level features also average the border frames, so they only come close.
    assert not torch.allclose(pooled, features_2d, atol=1e-4)
    assert torch.nn.functional.cosine_similarity(pooled, features_2d).min() > 0.9


def test_r2plus1d_cannot_be_inflated():
    student = build_student("r2plus1d_18", **TINY)
    with pytest.raises(InflationError, match="R\\(2\\+1\\)D.*DistInit"):
        inflate_from_2d(student, build_image_model("resnet_tiny").state_dict())


def test_mismatched_architectures_name_the_parameter():
    student = build_student("r3d_18", **TINY)
    with pytest.raises(UserError, match="stem.0.weight"):
        inflate_from_2d(student, build_image_model("resnet18").state_dict())
    deeper = build_student("r3d_18", width=16, stem_stride=1, stem_kernel=(3, 3))  # 2 blocks
    with pytest.raises(UserError, match="student layer1.1.conv1.0.weight has no 2D counterpart"):
        inflate_from_2d(deeper, build_image_model("resnet_tiny").state_dict())
    with pytest.raises(UserError, match="VideoResNet"):
        inflate_from_2d(nn.Conv3d(3, 3, 1), {})


def test_non_strict_inflation_reports_instead_of_failing():
    deeper = build_student("r3d_18", width=16, stem_stride=1, stem_kernel=(3, 3))
    before = deeper.layer1[1].conv1[0].weight.clone()
    report = inflate_from_2d(deeper, build_image_model("resnet_tiny").state_dict(), strict=False)
    assert "layer1.1.conv1.0.weight" in report.missing
    assert any("layer1.1.conv1.0.weight" in note for note in report.notes)
    assert "layer1.0.conv1.0.weight" in report.inflated
    torch.testing.assert_close(deeper.layer1[1].conv1[0].weight, before)


def test_flow_student_gets_the_channel_averaged_stem():
    model_2d = trained_looking_2d("resnet_tiny")
    student = build_student("r3d_18", in_channels=2, **TINY)
    report = inflate_from_2d(student, model_2d.state_dict())
    expected = model_2d.conv1.weight.mean(1, keepdim=True).repeat(1, 2, 1, 1) / 3
    for t in range(3):
        torch.testing.assert_close(student.stem[0].weight[:, :, t], expected)
    assert any("averaged over RGB" in note for note in report.notes)


@pytest.mark.parametrize("fmt", ["lead_dict", "ddp_plain", "safetensors"])
def test_inflate_from_file(tmp_path, fmt):
    model_2d = trained_looking_2d("resnet_tiny")
    if fmt == "lead_dict":
        path = tmp_path / "teacher.pt"
        torch.save(teacher_checkpoint(model_2d, "resnet_tiny", 7, input_size=32), path)
    elif fmt == "ddp_plain":
        path = tmp_path / "teacher.pth"
        torch.save({f"module.{k}": v for k, v in model_2d.state_dict().items()}, path)
    else:
        path = tmp_path / "teacher.safetensors"
        save_file(model_2d.state_dict(), str(path), metadata={"arch": "resnet_tiny"})
    student = build_student("r3d_18", **TINY)
    report = inflate_from_file(student, path)
    assert len(report.inflated) == 12
    torch.testing.assert_close(student.layer2[0].downsample[0].weight[:, :, 0],
                               model_2d.layer2[0].downsample[0].weight)
    torch.testing.assert_close(student.stem[1].running_var, model_2d.bn1.running_var)


def test_inflate_from_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(UserError, match=f"not found: {missing}"):
        inflate_from_file(build_student("r3d_18", **TINY), missing)
