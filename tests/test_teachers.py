import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from distinit.config import TeacherConfig
from distinit.errors import UserError
from distinit.models.image_resnet import IMAGE_MODELS, build_image_model
from distinit.models.teachers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Teacher,
    WeightsError,
    build_teacher,
    teacher_checkpoint,
)
from distinit.optional import import_timm, import_torchvision
from distinit.targets.teachers import build_teachers


def optional_or_skip(importer):
    try:
        return importer()
    except ImportError:
        pytest.skip("optional backend not installed")


def normalised(frames, mean, std):
    return (frames - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def trained_looking(model: nn.Module) -> nn.Module:
    # Non-trivial BN statistics so that a wrong train/eval mode changes the output.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.fixture
def tiny_ckpt(tmp_path):
    """The lead's format: resnet_tiny teacher with its own preprocessing and class names."""
    torch.manual_seed(0)
    model = trained_looking(build_image_model("resnet_tiny", num_classes=4))
    ckpt = teacher_checkpoint(model, "resnet_tiny", 4, mean=(0.3, 0.4, 0.5),
                              std=(0.2, 0.25, 0.3), input_size=32, classes=list("abcd"))
    ckpt["model"] = {f"module.{k}": v for k, v in ckpt["model"].items()}  # saved from DDP
    path = tmp_path / "teacher.pt"
    torch.save(ckpt, path)
    return path, model


# -- image ResNets ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_image_resnet_matches_torchvision_both_ways(name):
    tv = optional_or_skip(import_torchvision)
    torch.manual_seed(0)
    ref = trained_looking(getattr(tv.models, name)(num_classes=10))
    ours = build_image_model(name, num_classes=10).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_image_models_registry():
    tiny = build_image_model("resnet_tiny", num_classes=5)
    assert tiny.conv1.weight.shape == (16, 3, 3, 3) and isinstance(tiny.maxpool, nn.Identity)
    assert tiny(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    assert tiny.forward_features(torch.rand(2, 3, 32, 32)).shape == (2, tiny.feature_dim) == (2, 128)
    # The same parameter names as the standard models: inflation maps them the same way.
    names = {k.split(".")[0] for k in tiny.state_dict()}
    assert names == {k.split(".")[0] for k in build_image_model("resnet18").state_dict()}
    with pytest.raises(UserError, match=", ".join(IMAGE_MODELS)):
        build_image_model("resnet101")
    with pytest.raises(UserError, match=r"bad options \['depth'\]; valid: width"):
        build_image_model("resnet18", depth=3)


# -- teachers from files ---------------------------------------------------------------------

def test_ckpt_teacher_uses_the_recorded_arch_and_preprocessing(tiny_ckpt):
    path, model = tiny_ckpt
    teacher = build_teacher(f"ckpt:{path}")
    assert (teacher.num_classes, teacher.input_size, teacher.classes) == (4, 32, list("abcd"))
    frames = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(normalised(frames, (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)))
    torch.testing.assert_close(teacher(frames), expected)
    # Frames of another size are resized (bilinear) to the teacher's own input size first.
    big = torch.rand(3, 3, 48, 48)
    small = F.interpolate(big, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        expected = model(normalised(small, (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)))
    torch.testing.assert_close(teacher(big), expected)


def test_teacher_is_frozen_and_stays_in_eval(tiny_ckpt):
    path, _ = tiny_ckpt
    teacher = build_teacher(f"ckpt:{path}")
    assert not any(p.requires_grad for p in teacher.parameters())
    parent = nn.ModuleList([nn.Linear(2, 2), teacher]).train()
    assert parent[0].training and not teacher.training
    assert not any(m.training for m in teacher.modules())
    frames = torch.rand(2, 3, 32, 32)
    with torch.enable_grad():
        out_grad = teacher(frames)
    with torch.no_grad():
        out_nograd = teacher(frames)
    assert not out_grad.requires_grad and out_grad.dtype == torch.float32
    torch.testing.assert_close(out_grad, out_nograd)
    assert teacher.state_dict().keys() == {f"model.{k}" for k in
                                           build_image_model("resnet_tiny").state_dict()}


def test_arguments_override_the_checkpoint(tiny_ckpt):
    path, model = tiny_ckpt
    teacher = build_teacher(f"ckpt:{path}", arch="resnet_tiny", input_size=16, mean=(0.5,) * 3,
                            std=(0.5,) * 3)
    frames = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(normalised(frames, (0.5,) * 3, (0.5,) * 3))
    torch.testing.assert_close(teacher(frames), expected)


def test_plain_safetensors_ckpt_needs_arch_and_infers_classes(tmp_path):
    model = trained_looking(build_image_model("resnet_tiny", num_classes=6))
    path = tmp_path / "tiny.safetensors"
    save_file(model.state_dict(), str(path))
    with pytest.raises(UserError, match="does not record its arch"):
        build_teacher(f"ckpt:{path}")
    teacher = build_teacher(f"ckpt:{path}", arch="resnet_tiny")
    assert teacher.num_classes == 6 and teacher.input_size is None
    frames = torch.rand(2, 3, 24, 24)  # no input size recorded: used as they come
    with torch.no_grad():
        expected = model(normalised(frames, IMAGENET_MEAN, IMAGENET_STD))
    torch.testing.assert_close(teacher(frames), expected)
    path_meta = tmp_path / "tiny_meta.safetensors"
    save_file(model.state_dict(), str(path_meta),
              metadata={"arch": "resnet_tiny", "input_size": "24", "classes": '["x"]'})
    teacher = build_teacher(f"ckpt:{path_meta}")
    assert teacher.input_size == 24 and teacher.classes == ["x"]


def test_missing_weights_name_the_path(tmp_path):
    missing = tmp_path / "absent.pth"
    with pytest.raises(WeightsError, match=f"teacher weights not found: {missing} .*resnet_tiny"):
        build_teacher(f"ckpt:{missing}", arch="resnet_tiny")
    with pytest.raises(WeightsError, match=f"not found: {missing}"):
        build_teacher(f"torchscript:{missing}")
    with pytest.raises(WeightsError, match=f"not found: {missing}"):
        build_teacher("torchvision:resnet18", weights=str(missing))


def test_mismatched_weights_name_file_arch_and_keys(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(build_image_model("resnet18", num_classes=4).state_dict(), path)
    with pytest.raises(WeightsError, match=r"r18.pth does not match resnet_tiny .*wrong shape: "
                                           r"conv1.weight \(64, 3, 7, 7\)"):
        build_teacher(f"ckpt:{path}", arch="resnet_tiny")
    with pytest.raises(WeightsError, match="unexpected: layer1.1"):
        build_teacher(f"ckpt:{path}", arch="resnet_tiny", arch_kwargs={"width": 64,
                                                                       "small_input": False})
    pickled = tmp_path / "pickled.pt"
    torch.save(build_image_model("resnet_tiny"), pickled)
    with pytest.raises(WeightsError, match="not the pickled model"):
        build_teacher(f"ckpt:{pickled}", arch="resnet_tiny")


def test_unknown_specs(tiny_ckpt):
    with pytest.raises(UserError, match="torchvision:<name>, timm:<name>"):
        build_teacher("resnet50")
    with pytest.raises(UserError, match="unknown teacher arch 'vgg'; valid: resnet18"):
        build_teacher(f"ckpt:{tiny_ckpt[0]}", arch="vgg")


def test_build_teachers(tiny_ckpt, tmp_path):
    path, _ = tiny_ckpt
    teachers = build_teachers([TeacherConfig(spec=f"ckpt:{path}"),
                               TeacherConfig(spec=f"ckpt:{path}", input_size=16)])
    assert [t.input_size for t in teachers] == [32, 16]


def test_torchscript_teacher(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 9)).eval()
    path = tmp_path / "tiny.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(path))
    teacher = build_teacher(f"torchscript:{path}", input_size=20, mean=(0.1, 0.2, 0.3))
    assert teacher.num_classes == 9 and teacher.input_size == 20
    frames = torch.rand(2, 3, 20, 20)
    with torch.no_grad():
        expected = model(normalised(frames, (0.1, 0.2, 0.3), IMAGENET_STD))
    torch.testing.assert_close(teacher(frames), expected)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_torchvision_teacher_from_file_and_from_its_cache(tmp_path, monkeypatch):
    tv = optional_or_skip(import_torchvision)
    torch.manual_seed(0)
    model = trained_looking(tv.models.resnet18(num_classes=10))
    path = tmp_path / "r18.pth"
    torch.save(model.state_dict(), path)
    teacher = build_teacher("torchvision:resnet18", weights=str(path), input_size=64)
    assert teacher.num_classes == 10 and tuple(teacher.mean.flatten().tolist()) == pytest.approx(
        IMAGENET_MEAN)
    assert build_teacher("torchvision:resnet18", weights=str(path)).input_size == 224
    frames = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(normalised(frames, IMAGENET_MEAN, IMAGENET_STD))
    torch.testing.assert_close(teacher(frames), expected)

    # No weights given: only torchvision's own cache is read, never the network.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsError, match=f"not found: {cached}.*weights="):
        build_teacher("torchvision:resnet18")
    imagenet_shaped = tv.models.resnet18().state_dict()
    cached.parent.mkdir(parents=True)
    torch.save(imagenet_shaped, cached)
    teacher = build_teacher("torchvision:resnet18", input_size=32)
    assert teacher.num_classes == 1000
    torch.testing.assert_close(teacher.model.fc.weight, imagenet_shaped["fc.weight"])
    with pytest.raises(UserError, match="unknown torchvision classifier"):
        build_teacher("torchvision:not_a_net")


def test_timm_teacher_from_file_and_from_the_hf_cache(tmp_path, monkeypatch):
    timm = optional_or_skip(import_timm)
    import huggingface_hub

    torch.manual_seed(0)
    model = trained_looking(timm.create_model("test_resnet", num_classes=5))
    path = tmp_path / "test_resnet.safetensors"
    save_file(model.state_dict(), str(path))
    teacher = build_teacher("timm:test_resnet", weights=str(path))
    # timm's own preprocessing for this model: mean = std = 0.5, 160 px.
    assert teacher.num_classes == 5 and teacher.input_size == 160
    frames = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        expected = model(normalised(frames, (0.5,) * 3, (0.5,) * 3))
    torch.testing.assert_close(teacher(frames), expected)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="timm/test_resnet.r160_in1k.*weights="):
        build_teacher("timm:test_resnet")
    # A Hugging Face cache laid out as hf_hub_download leaves it.
    repo = tmp_path / "hf" / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    pretrained = trained_looking(timm.create_model("test_resnet"))
    save_file(pretrained.state_dict(), str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    teacher = build_teacher("timm:test_resnet", input_size=64)
    assert teacher.num_classes == 1000
    torch.testing.assert_close(teacher.model.fc.weight, pretrained.fc.weight)


def test_teacher_wraps_an_in_memory_model():
    model = trained_looking(build_image_model("resnet_tiny", num_classes=3)).train()
    teacher = Teacher(model, "fresh", input_size=None)
    assert teacher.num_classes == 3 and not model.training
    with pytest.raises(TypeError, match="float frames"):
        teacher(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
