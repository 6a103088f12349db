"""auxSKD, the pretext tasks (VSPP, pace, VCOP) and stages chained by configuration.

(The similarity-distillation loss is checked against a hand computation in test_contrastive.)
"""

import math

import pytest
import torch
import yaml

from distinit.build import clip_dataset
from distinit.cli import main
from distinit.config import load_config
from distinit.data.clips.views import View
from distinit.engine.checkpoint import load_checkpoint
from distinit.errors import UserError
from distinit.experiments.chain import read_chain
from distinit.methods import config_class
from distinit.methods.auxskd import AuxSKD, AuxSKDConfig, Predicted, _views
from distinit.methods.heads import Pathway
from distinit.methods.momentum import momentum_at
from distinit.models.students import r3d_18

TINY = ["model.width=8", "optim.epochs=1", "optim.batch_size=4", "log_every=1"]


def _encoder():
    return r3d_18(num_classes=0, width=4, layers=[1, 1, 1, 1], stem_stride=2, stem_kernel=(3, 3))


def test_sampler_views_carry_their_labels(world):
    cfg = load_config("configs/demo/vcop.yaml", ["model.width=8", "data.cache=none"],
                      cls=config_class("vcop"))
    videos = sorted(world.corpus_dir.rglob("*.mp4"))[:4]
    views = [View("video", sampler="vcop", options=(("n_clips", 3), ("interval", 2))),
             View("other", sampler="vspp", options=(("max_segment", 4), ("max_speed", 4)))]
    data = clip_dataset(cfg.data, videos, None, True, 0, views=views)
    item = data[1]
    assert item["video"].shape == (3, 3, 4, 32, 32)  # 3 clips of 4 frames, one crop
    assert 0 <= item["video_order"] < 6
    assert item["other"].shape == (3, 4, 32, 32) and 0 <= item["other_speed"] < 4
    assert 0 <= item["other_segment"] < 4
    again = data[1]  # a function of (seed, pass, index)
    assert torch.equal(again["video"], item["video"]) and again["video_order"] == item["video_order"]
    with pytest.raises(UserError, match="unknown sampler"):
        clip_dataset(cfg.data, videos, None, True, 0, views=[View("video", sampler="magic")])


def test_auxskd_teacher_is_a_momentum_copy_or_frozen():
    torch.manual_seed(0)
    cfg = AuxSKDConfig(dim=8, queue=6, momentum=0.5, key_chunks=1)
    method = AuxSKD(Pathway(_encoder(), 8), cfg)
    batch = {"video": torch.randn(4, 3, 4, 16, 16), "video2": torch.randn(4, 3, 4, 16, 16)}
    out = method(batch)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert 0 < out["spread"] < 2  # unit vectors spread over directions: near 1
    assert int(method.queue.ptr) == 4  # the teacher's keys were queued
    out["loss"].backward()
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before = next(method.teacher.parameters()).clone()
    method.after_step(1)  # teacher = 0.5 teacher + 0.5 student
    online = next(method.student.parameters())
    assert torch.allclose(next(method.teacher.parameters()), 0.5 * before + 0.5 * online)
    assert any(k.startswith("teacher.") for k in method.method_state())  # it moves: saved
    frozen = AuxSKD(Pathway(_encoder(), 8), cfg, teacher=Pathway(_encoder(), 8))
    fixed = next(frozen.teacher.parameters()).clone()
    frozen.after_step(1)
    assert torch.equal(next(frozen.teacher.parameters()), fixed)
    assert "teacher" in frozen.frozen and not any(k.startswith("teacher.")
                                                   for k in frozen.method_state())


def test_auxskd_student_has_a_predictor_the_teacher_lacks():
    """Plrbear/auxSKD train.py:83-90, 142: 128 -> 2 x feature size -> BN -> ReLU -> 128, on the
    student only; the momentum teacher copies the encoder and projection."""
    torch.manual_seed(0)
    cfg = AuxSKDConfig(dim=8, queue=6, momentum=0.5, key_chunks=1)
    pathway = Pathway(_encoder(), 8)
    d = pathway.head[0].in_features
    student = Predicted(pathway, 8)
    layers = [type(m).__name__ for m in student.predictor]
    assert layers == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert student.predictor[0].in_features == 8 and student.predictor[0].out_features == 2 * d
    method = AuxSKD(student, cfg)
    assert not any("predictor" in k for k in method.teacher.state_dict())
    batch = {"video": torch.randn(4, 3, 4, 16, 16), "video2": torch.randn(4, 3, 4, 16, 16)}
    out = method(batch)
    q = student(batch["video"])
    assert torch.allclose(q.norm(dim=1), torch.ones(4))
    out["loss"].backward()
    assert student.predictor[0].weight.grad is not None
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = next(method.teacher.parameters()).clone()
    method.after_step(1)
    assert torch.allclose(next(method.teacher.parameters()),
                          0.5 * before + 0.5 * next(pathway.parameters()))
    assert set(method.backbone_state_dict()) == set(pathway.encoder.state_dict())


def test_momentum_schedule_and_the_share_of_the_initial_teacher_left():
    """BYOL's cosine: m_k = 1 - (1 - m0) (cos(pi k / K) + 1) / 2, from m0 to 1; `init_left` is
    the product of the momenta applied so far."""
    assert momentum_at(5, 10, 0.99, "constant") == 0.99
    assert momentum_at(0, 10, 0.9, "cosine") == pytest.approx(0.9)
    assert momentum_at(5, 10, 0.9, "cosine") == pytest.approx(0.95)
    assert momentum_at(10, 10, 0.9, "cosine") == pytest.approx(1.0)
    torch.manual_seed(0)
    cfg = AuxSKDConfig(dim=8, queue=6, momentum=0.9, momentum_schedule="cosine", key_chunks=1,
                       predictor=False)
    method = AuxSKD(Pathway(_encoder(), 8), cfg)
    method.begin(4)
    expected = 1.0
    for step in range(1, 5):
        method.after_step(step)
        expected *= 1 - 0.1 * (math.cos(math.pi * step / 4) + 1) / 2
    assert float(method.init_left) == pytest.approx(expected, rel=1e-12)
    assert "init_left" in method.method_state()  # a resumed run keeps counting


def test_auxskd_pair_is_two_vspp_clips_of_different_pace(world):
    """Both clips are VSPP clips with independent starts; the second's speed and segment
    differ from the first's (Plrbear/auxSKD auxSKD/datasets/ucf101.py:32-75)."""
    cfg = load_config("configs/demo/auxskd.yaml", ["data.cache=none", "model.width=8"],
                      cls=config_class("auxskd"))
    videos = sorted(world.corpus_dir.rglob("*.mp4"))[:4]
    data = clip_dataset(cfg.data, videos, None, True, 0, views=_views(cfg.auxskd, 8))
    for i in range(8):
        item = data[i]
        assert item["video"].shape == item["video2"].shape == (3, 8, 32, 32)
        assert item["video_speed"] != item["video2_speed"]
        assert item["video_segment"] != item["video2_segment"]
    with pytest.raises(UserError, match="do not fit"):
        _views(AuxSKDConfig(max_segment=9), 8)
    assert _views(AuxSKDConfig(views="rate", rate=3), 8)[1].rate == 3


def _chain(tmp_path, world, name, vspp_extra=()):
    w = world.root
    chain = {
        "out_dir": str(tmp_path / name),
        "all": [*TINY, f"data.cache_dir={w / 'cache'}"],
        "stages": [
            {"name": "auxskd", "method": "auxskd", "config": "configs/demo/auxskd.yaml",
             "overrides": [f"data.videos={world.corpus_dir}", "auxskd.queue=16"]},
            {"name": "vspp", "method": "vspp", "config": "configs/demo/vspp.yaml",
             "overrides": [f"data.videos={world.corpus_dir}", "optim.epochs=2", *vspp_extra]},
            {"name": "finetune", "method": "finetune", "config": "configs/demo/finetune.yaml",
             "overrides": ["data.format=hmdb51", f"data.video_root={world.actions_videos}",
                           f"data.split_dir={world.actions_splits}", "data.num_test_clips=1"]},
        ],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(chain))
    return path


def test_a_chain_stopped_in_stage_2_resumes_exactly(tmp_path, world):
    straight = _chain(tmp_path, world, "straight")
    assert main(["chain", str(straight)]) == 0
    # Each stage starts from the previous one's backbone.
    vspp = yaml.safe_load((tmp_path / "straight" / "vspp" / "config.yaml").read_text())
    assert vspp["model"]["init"] == "checkpoint"
    assert vspp["model"]["weights"].endswith("auxskd/last.pt")
    # The same chain, stopped after 2 of stage 2's 6 steps (a crash, a scheduler's signal) ...
    stopped = _chain(tmp_path, world, "stopped", vspp_extra=["stop_after=2"])
    assert main(["chain", str(stopped)]) == 0
    assert load_checkpoint(tmp_path / "stopped" / "vspp" / "last.pt")["step"] == 2
    assert not (tmp_path / "stopped" / "finetune").exists()  # later stages wait for it
    # ... then run again: stage 1 is reloaded, stage 2 continues, stage 3 runs.
    assert main(["chain", str(_chain(tmp_path, world, "stopped"))]) == 0
    for stage in ("auxskd", "vspp", "finetune"):
        a = load_checkpoint(tmp_path / "straight" / stage / "last.pt")["model"]
        b = load_checkpoint(tmp_path / "stopped" / stage / "last.pt")["model"]
        for k in a:
            assert torch.equal(a[k], b[k]), (stage, k)


def test_pace_and_vcop_run_alone(tmp_path, world):
    for task in ("pace", "vcop"):
        assert main(["pretrain", task, f"configs/demo/{task}.yaml", *TINY,
                     f"data.videos={world.corpus_dir}", f"data.cache_dir={world.root / 'cache'}",
                     f"out_dir={tmp_path / task}"]) == 0
        state = load_checkpoint(tmp_path / task / "last.pt")
        assert any(k.startswith("layer1") for k in state["backbone"])


@pytest.mark.parametrize("stages, message", [
    ([{"name": "a", "method": "magic"}], "unknown method 'magic'"),
    ([{"name": "a", "method": "vspp", "epochs": 3}], "unknown keys epochs"),
    ([{"name": "a", "method": "vspp"}, {"name": "a", "method": "vcop"}], "two stages"),
    ([], "no stages"),
])
def test_bad_chain_files_get_one_line(tmp_path, stages, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}))
    with pytest.raises(UserError, match=message):
        read_chain(path)


def test_loss_vs_uniform_is_one_for_a_student_that_knows_nothing():
    """loss_vs_uniform = KL / (log K - H(teacher)): 1 when the student's similarities to every
    queued key are equal (a uniform student), 0 when it matches the teacher's distribution."""

    class Fixed(torch.nn.Module):  # returns the clip's first row as its (unit) embedding
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return x[:, :4] + 0 * self.w

    torch.manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    k = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    cfg = AuxSKDConfig(dim=4, queue=6, t_student=0.02, t_teacher=0.02, key_chunks=1,
                       predictor=False)
    method = AuxSKD(Fixed(), cfg, teacher=Fixed())
    method.queue.keys.copy_(keys)
    same = method({"video": k, "video2": k})  # the student is the teacher
    assert float(same["loss_vs_uniform"]) == pytest.approx(0.0, abs=1e-5)
    method.queue.keys.copy_(keys)
    blind = torch.zeros(3, 4)  # similarity 0 to every key: a uniform distribution
    out = method({"video": blind, "video2": k})
    assert float(out["loss_vs_uniform"]) == pytest.approx(1.0, abs=1e-5)
