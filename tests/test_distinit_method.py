import torch
from torch import nn

from distinit.engine.runtime import Runtime
from distinit.losses.distillation import soft_target_cross_entropy
from distinit.methods.distinit import DistInit
from distinit.methods.heads import MultiHeadStudent
from distinit.models.image_resnet import build_image_model
from distinit.models.students import TINY, build_student
from distinit.models.teachers import Teacher
from distinit.targets.frames import select_frames, unnormalize
from distinit.targets.holdout import agreement_counts, holdout_agreement
from distinit.targets.teachers import entropy

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _clip(B=2, T=4):
    # frame t of clip b is filled with the value b * 10 + t, so selections can be read back
    v = torch.arange(B)[:, None] * 10 + torch.arange(T)[None]
    return v[:, None, :, None, None].float().expand(B, 3, T, 2, 2).clone()


def test_select_frames_center_random_multi():
    clip = _clip()
    center = select_frames(clip, "center")
    assert center.shape == (2, 1, 3, 2, 2) and center[:, 0, 0, 0, 0].tolist() == [2.0, 12.0]
    rand = select_frames(clip, "random")[:, 0, 0, 0, 0]
    assert rand[0] in range(0, 4) and rand[1] in range(10, 14)
    multi = select_frames(clip, "multi", num_frames=3)[:, :, 0, 0, 0]
    assert multi.shape == (2, 3)
    for b in range(2):  # distinct frames of the right clip
        assert len(set(multi[b].tolist())) == 3 and all(10 * b <= v < 10 * b + 4 for v in multi[b])


def _method(**kw):
    torch.manual_seed(0)
    teacher = Teacher(build_image_model("resnet_tiny", num_classes=5, width=8), "t", None,
                      mean=[0.4, 0.4, 0.4], std=[0.2, 0.2, 0.2])
    student = build_student("r3d_18", num_classes=1, **{**TINY, "width": 8})
    net = MultiHeadStudent(student, [teacher.num_classes])
    return DistInit(net, [teacher], [1.0], MEAN, STD, **kw), teacher


def test_distinit_loss_is_eq2_on_the_center_frame_targets():
    method, teacher = _method(frames="center")
    method.eval()
    clip = torch.randn(2, 3, 8, 32, 32)
    out = method({"video": clip})
    pixels = clip[:, :, 4] * 0.25 + 0.5  # the student's normalisation undone
    targets = teacher(pixels.clamp(0, 1)).softmax(-1)
    expected = soft_target_cross_entropy(method.trainable(clip)[0], targets).mean()
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(not k.startswith("teacher") for k in method.trainable.state_dict())


def test_entropy_filter_drops_and_logs():
    method, _ = _method(frames="center", max_entropy=1e-6)  # a random teacher is never that sure
    out = method({"video": torch.randn(2, 3, 8, 32, 32)})
    assert out["dropped_t0"].item() == 1.0 and out["loss"].item() == 0.0


def test_multi_head_student_one_head_per_teacher():
    student = build_student("r2plus1d_18", num_classes=1, **{**TINY, "width": 8})
    net = MultiHeadStudent(student, [5, 7])
    outs = net(torch.randn(2, 3, 8, 32, 32))
    assert [o.shape for o in outs] == [(2, 5), (2, 7)]
    assert isinstance(net.heads[0], nn.Linear)


def test_holdout_agreement_matches_a_hand_computation():
    method, teacher = _method(frames="center")
    clips = torch.randn(6, 3, 8, 32, 32)
    loader = [{"video": clips[:4]}, {"video": clips[4:]}]
    method.trainable.train()
    got = holdout_agreement(method.student, method.targets, loader, Runtime())
    assert method.trainable.training  # put back in the mode it had
    method.trainable.eval()
    with torch.no_grad():
        targets = teacher((clips[:, :, 4] * 0.25 + 0.5).clamp(0, 1)).softmax(-1)
        student = method.trainable(clips)[0]
    assert abs(got["holdout_agree_t0"]
               - 100 * (student.argmax(-1) == targets.argmax(-1)).float().mean().item()) < 1e-6
    assert abs(got["holdout_loss_t0"]
               - soft_target_cross_entropy(student, targets).mean().item()) < 1e-5
    assert abs(got["holdout_entropy_t0"] - entropy(targets).mean().item()) < 1e-5
    with torch.no_grad():  # the clip-level target: every frame's logits averaged
        frames = (clips.transpose(1, 2) * 0.25 + 0.5).clamp(0, 1).flatten(0, 1)
        clip_level = teacher(frames).view(6, 8, -1).mean(1)
    top = targets.argmax(-1), clip_level.argmax(-1), student.argmax(-1)
    assert abs(got["holdout_agree_clip_t0"]
               - 100 * (top[2] == top[1]).float().mean().item()) < 1e-6
    assert abs(got["holdout_ceiling_t0"] - 100 * (top[0] == top[1]).float().mean().item()) < 1e-6
    # the loss against the clip-level target, and how many classes the student answers
    assert abs(got["holdout_loss_clip_t0"] - soft_target_cross_entropy(
        student, clip_level.softmax(-1)).mean().item()) < 1e-5
    assert got["holdout_classes_t0"] == len(set(top[2].tolist()))


def test_agreement_counts_on_hand_built_logits():
    # 4 clips, 3 classes; the frame target's top class: 0 0 1 2, the clip-level one: 0 1 1 1
    target = torch.tensor([[5.0, 0, 0], [4, 1, 0], [0, 3, 1], [0, 1, 2]])
    clip_level = torch.tensor([[2.0, 1, 0], [1, 3, 0], [0, 2, 1], [1, 4, 0]])
    # a student equal to the clip-level top class agrees with it on every clip, and with the
    # frame target exactly as often as the frame target agrees with the clip (the ceiling)
    agree, agree_clip, ceiling = agreement_counts(clip_level * 7, target, clip_level).tolist()
    assert (agree_clip, ceiling, agree) == (4, 2, 2)
    agree, agree_clip, ceiling = agreement_counts(target, target, clip_level).tolist()
    assert (agree, agree_clip, ceiling) == (4, 2, 2)  # a student that copies the frame target


def test_holdout_clip_agreement_of_a_student_that_learned_the_clip_level_view():
    method, teacher = _method(frames="random")
    clips = torch.randn(6, 3, 8, 32, 32)

    class ClipLevel(nn.Module):  # answers the teacher's clip-level top class
        def forward(self, video):
            frames = unnormalize(video.transpose(1, 2), MEAN, STD).flatten(0, 1)
            return [teacher(frames).view(len(video), 8, -1).mean(1)]

    torch.manual_seed(3)
    got = holdout_agreement(ClipLevel(), method.targets, [{"video": clips}], Runtime())
    assert got["holdout_agree_clip_t0"] == 100.0
    assert got["holdout_agree_t0"] == got["holdout_ceiling_t0"]  # frame vs clip, both ways


def test_holdout_split_is_fixed_and_at_most_a_tenth():
    from distinit.build import holdout_split

    videos = [f"v{i}" for i in range(50)]
    train, held = holdout_split(videos, 256)
    assert len(held) == 5 and len(train) == 45 and not set(train) & set(held)
    assert holdout_split(videos, 256) == (train, held)  # the same videos every time
    assert holdout_split(videos, 0) == (videos, [])
    assert holdout_split(videos[:9], 3) == (videos[:9], [])  # a tenth of 9 is 0
