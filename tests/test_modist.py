"""MoDist: the loss against its InfoNCE terms, queues and momentum encoders, where gradients go,
exact resume with the queues, the exported backbone, and two gloo processes equal to one."""

import socket
from dataclasses import asdict
from datetime import timedelta

import pytest
import torch
import torch.distributed as td
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset
from toy import leave_child

from distinit.build import STUDENT_HINT, describe_student, make_student
from distinit.config import ConfigError, DistillConfig, load_config
from distinit.engine.checkpoint import load_checkpoint, load_weights
from distinit.engine.train import train
from distinit.errors import UserError
from distinit.losses.contrastive import info_nce
from distinit.losses.distillation import soft_target_cross_entropy
from distinit.methods import config_class, get_method
from distinit.methods.heads import Pathway
from distinit.methods.modist import MoDist, ModistConfig, ModistNet, build, positive_accuracy
from distinit.methods.momentum import encode_keys
from distinit.models.teachers import Teacher

CHANNELS = {"video": 3, "flow": 2, "video2": 3, "flow2": 2}


class _Encoder(nn.Module):
    """A tiny clip encoder (B, C, T, H, W) -> (B, 8); BN-free unless asked, so that one batch and
    its halves in two processes compute the same thing."""

    feature_dim = 8

    def __init__(self, in_channels: int, bn: bool = False):
        super().__init__()
        norm = [nn.BatchNorm3d(8)] if bn else []
        self.net = nn.Sequential(nn.Conv3d(in_channels, 8, 3, padding=1), *norm, nn.ReLU(),
                                 nn.AdaptiveAvgPool3d(1), nn.Flatten())

    def forward_features(self, x):
        return self.net(x)


def _method(*, bn=False, teachers=(), distill=None, **kw) -> MoDist:
    cfg = ModistConfig(**{"dim": 4, "queue": 16, **kw})
    torch.manual_seed(0)  # the same weights and initial queues in every process
    rgb = Pathway(_Encoder(3, bn), cfg.dim)
    flow = Pathway(_Encoder(2, bn), cfg.dim, in_channels=2) if cfg.motion else None
    net = ModistNet(rgb, flow, [t.num_classes for t in teachers])
    return MoDist(net, cfg, teachers, [1.0] * len(teachers), distill)


def _batch(B=4, seed=0, names=tuple(CHANNELS)) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(B, CHANNELS[k], 4, 8, 8, generator=g) for k in names}


@torch.no_grad()
def _by_hand(method, batch):
    """Queries and keys as the formula reads them (the key encoders are still the online ones,
    and a BN-free encoder gives the same keys in chunks or whole)."""
    q = method.trainable(batch["video"], batch.get("flow"))
    return q, method.key_rgb(batch["video2"]), (method.key_flow(batch["flow2"])
                                                 if method.cfg.motion else None)


def test_loss_is_the_weighted_sum_of_the_four_info_nce_terms():
    method = _method(weight_rgb=0.5, weight_flow=2.0, weight_cross=0.25, temperature=0.1)
    batch = _batch()
    neg_rgb, neg_flow = method.queue_rgb.keys.clone(), method.queue_flow.keys.clone()
    q, k_rgb, k_flow = _by_hand(method, batch)
    out = method(batch)
    terms = {"rgb": (q["rgb"], k_rgb, neg_rgb), "flow": (q["flow"], k_flow, neg_flow),
             "rgb_flow": (q["rgb"], k_flow, neg_flow), "flow_rgb": (q["flow"], k_rgb, neg_rgb)}
    losses = {name: info_nce(*t, 0.1) for name, t in terms.items()}
    expected = (0.5 * losses["rgb"] + 2.0 * losses["flow"]
                + 0.25 * (losses["rgb_flow"] + losses["flow_rgb"]))
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    for name, t in terms.items():
        assert torch.allclose(out[f"loss_{name}"], losses[name], atol=1e-5), name
        assert out[f"acc_{name}"] == positive_accuracy(*t), name
    out["loss"].backward()  # after the enqueue: the loss kept its own copy of the queue


def test_positive_accuracy_counts_queries_whose_positive_beats_every_negative():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.8, 0.6], [0.6, 0.8]])
    queue = torch.tensor([[0.6, 0.8], [-1.0, 0.0]])  # beats query 0's positive, not query 1's
    assert positive_accuracy(q, k, queue).item() == 0.5


def test_positive_accuracy_is_taken_in_float32_under_autocast():
    """bf16 autocast rounds the negative 0.9991 up to 1.0, past the positive 0.9995; the accuracy
    compares float32 logits, as the loss does."""
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.9995, (1 - 0.9995**2) ** 0.5]])
    queue = torch.tensor([[0.9991, (1 - 0.9991**2) ** 0.5]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert positive_accuracy(q, k, queue).item() == 1.0


def test_each_terms_accuracy_is_top1_of_the_losss_own_logits_and_leaves_the_loss_alone():
    """acc_NAME is whether the positive (index 0) has the highest of the logits InfoNCE takes
    its cross-entropy over; the loss is the same with or without the logged metrics."""
    method = _method(queue=6, temperature=0.1)
    batch = _batch(B=8)
    negatives = {"rgb": method.queue_rgb.keys.clone(), "flow": method.queue_flow.keys.clone()}
    q, k_rgb, k_flow = _by_hand(method, batch)
    out = method(batch)
    keys = {"rgb": k_rgb, "flow": k_flow}
    total = 0.0
    for name in ("rgb", "flow", "rgb_flow", "flow_rgb"):
        query, key = q[name.split("_")[0]], keys[name.split("_")[-1]]
        logits = torch.cat([(query * key).sum(1, keepdim=True),
                            query @ negatives[name.split("_")[-1]].T], dim=1) / 0.1  # (B, 1+K)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
        assert torch.allclose(out[f"loss_{name}"], loss, atol=1e-5), name
        assert out[f"acc_{name}"].item() == (logits.argmax(1) == 0).float().mean().item(), name
        total = total + loss
    assert torch.allclose(out["loss"], total, atol=1e-5)


def test_without_motion_only_the_rgb_term_and_no_flow_is_read():
    method = _method(motion=False, weight_rgb=0.5)
    batch = _batch(names=("video", "video2"))
    neg = method.queue_rgb.keys.clone()
    q, k_rgb, _ = _by_hand(method, batch)
    out = method(batch)
    assert set(out) == {"loss", "loss_rgb", "acc_rgb"}
    assert torch.allclose(out["loss"], 0.5 * info_nce(q["rgb"], k_rgb, neg, 0.07), atol=1e-5)
    assert {k.split(".")[0] for k in method.method_state()} == {"key_rgb", "queue_rgb"}


def test_keys_are_enqueued_after_the_loss_and_wrap_around():
    method = _method(queue=10)
    batch = _batch()
    start = {m: getattr(method, f"queue_{m}").keys.clone() for m in ("rgb", "flow")}
    _, k_rgb, k_flow = _by_hand(method, batch)
    method(batch)
    for m, k in (("rgb", k_rgb), ("flow", k_flow)):
        queue = getattr(method, f"queue_{m}")
        assert torch.allclose(queue.keys[:4], k, atol=1e-6) and int(queue.ptr) == 4
        assert torch.equal(queue.keys[4:], start[m][4:])
        assert torch.allclose(queue.keys.norm(dim=1), torch.ones(10))
    method(batch)
    method(_batch(seed=1))  # slots 8, 9, then 0, 1
    _, k3, _ = _by_hand(method, _batch(seed=1))
    assert int(method.queue_rgb.ptr) == 2
    assert torch.allclose(torch.cat([method.queue_rgb.keys[8:], method.queue_rgb.keys[:2]]), k3,
                          atol=1e-6)


def test_keys_in_one_process_get_batch_statistics_of_a_random_half():
    method = _method(bn=True, key_chunks=2)
    x = _batch(B=6)["video2"]
    torch.manual_seed(5)
    keys = encode_keys(method.key_rgb, x, method.cfg.key_chunks)
    torch.manual_seed(5)
    perm = torch.randperm(6)  # the shuffle's draw
    with torch.no_grad():
        by_hand = torch.cat([method.key_rgb(x[perm[:3]]), method.key_rgb(x[perm[3:]])])
        whole = method.key_rgb(x)
    assert torch.allclose(keys, by_hand[perm.argsort()], atol=1e-6)  # back in the batch's order
    assert not torch.allclose(keys, whole, atol=1e-3)  # not the statistics the queries see
    # plain MoCo (one chunk): in one process the shuffle alone changes nothing
    assert torch.allclose(encode_keys(method.key_rgb, x, 1), whole, atol=1e-6)


def test_after_step_moves_each_key_encoder_by_exactly_the_momentum():
    method = _method(momentum=0.9)
    with torch.no_grad():  # as if the optimizer had moved the online pathways
        for p in method.trainable.parameters():
            p.add_(torch.randn_like(p))
    old_rgb = method.key_rgb.head[0].weight.clone()
    old_flow = method.key_flow.encoder.net[0].weight.clone()
    method.after_step(1)
    assert torch.allclose(method.key_rgb.head[0].weight,
                          0.9 * old_rgb + 0.1 * method.student.rgb.head[0].weight, atol=1e-6)
    assert torch.allclose(method.key_flow.encoder.net[0].weight,
                          0.9 * old_flow + 0.1 * method.student.flow.encoder.net[0].weight,
                          atol=1e-6)


def test_gradients_reach_only_trainable_and_distillation_adds_distinits_loss():
    torch.manual_seed(0)
    teacher = Teacher(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)), "t", None,
                      mean=[0.4] * 3, std=[0.2] * 3, num_classes=5)
    method = _method(distill_weight=0.5, teachers=[teacher], distill=DistillConfig(frames="center"))
    method.train()
    batch = _batch()
    out = method(batch)
    out["loss"].backward()
    assert all(p.grad is not None for p in method.trainable.parameters())
    others = [(n, p) for n, p in method.named_parameters() if not n.startswith("trainable.")]
    assert {n.split(".")[0] for n, _ in others} == {"key_rgb", "key_flow", "targets"}
    assert all(p.grad is None and not p.requires_grad for _, p in others)
    assert not any(b.requires_grad for b in method.buffers())
    assert not teacher.training and method.key_rgb.training  # keys use batch statistics
    assert not any(k.startswith("targets.") for k in method.method_state())
    # the distillation term: DistInit's soft-target loss on the centre frame, weighted
    with torch.no_grad():
        pixels = (batch["video"][:, :, 2] * 0.25 + 0.5).clamp(0, 1)  # the student's norm undone
        targets = teacher(pixels).softmax(-1)
        logits = method.trainable(batch["video"], batch["flow"])["logits"][0]
    assert torch.allclose(out["loss_t0"], soft_target_cross_entropy(logits, targets).mean(),
                          atol=1e-5)
    contrastive = sum(out[f"loss_{n}"] for n in ("rgb", "flow", "rgb_flow", "flow_rgb"))
    assert torch.allclose(out["loss"], contrastive + 0.5 * out["loss_t0"], atol=1e-5)


class _Views(Dataset):
    """MoDist's four views of n toy videos, addressed as pass * n + index."""

    def __init__(self, n=16):
        self.n, self.views = n, _batch(B=n, seed=3)

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        return {**{k: v[item % self.n] for k, v in self.views.items()}, "rng_seed": item}


ARGS = ["precision=fp32", "channels_last=off", "device=cpu", "data.num_workers=0",
        "optim.epochs=2", "optim.batch_size=4", "optim.lr=0.1", "log_every=1", "ckpt_every=100",
        "modist.dim=4", "modist.queue=12", "modist.momentum=0.9"]


def _train(out, *extra, resume=False, seed=0):
    cfg = load_config(None, [*ARGS, f"out_dir={out}", *extra], cls=config_class("modist"))
    method = _method(bn=True, **asdict(cfg.modist))
    torch.manual_seed(seed)
    train(cfg, method, _Views(), resume=resume)
    return method.state_dict()


def test_resume_is_exact_including_key_encoders_and_queues(tmp_path):
    straight = _train(tmp_path / "a")  # 4 steps an epoch, 8 steps; 32 keys wrap the queue of 12
    _train(tmp_path / "b", "stop_after=3")
    saved = load_checkpoint(tmp_path / "b" / "last.pt")["method"]
    assert int(saved["queue_rgb.ptr"]) == 0 and int(saved["queue_flow.ptr"]) == 0  # 12 keys
    assert any(k.startswith("key_flow.encoder.net.1.running_mean") for k in saved)
    resumed = _train(tmp_path / "b", resume=True, seed=1)
    assert straight.keys() == resumed.keys()
    assert {k.split(".")[0] for k in straight} == {"trainable", "key_rgb", "key_flow",
                                                    "queue_rgb", "queue_flow"}
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    assert int(straight["queue_rgb.ptr"]) == 32 % 12


TINY = ["model.arch=r3d_18", "model.width=4", "model.layers=[1,1,1,1]", "model.stem_stride=1",
        "model.stem_kernel=[3,3]"]


def test_backbone_loads_into_a_student_of_the_same_arch():
    cfg = load_config(None, TINY, cls=config_class("modist"))
    torch.manual_seed(0)
    rgb = Pathway(make_student(cfg.model, num_classes=0), 8)
    flow = Pathway(make_student(cfg.model, num_classes=0, in_channels=2), 8, in_channels=2)
    method = MoDist(ModistNet(rgb, flow), ModistConfig(dim=8, queue=8))
    method(_batch())  # real students with batch norm, keys in chunks
    student = make_student(cfg.model, num_classes=5)
    state = method.backbone_state_dict()
    assert {k for k in student.state_dict() if k not in state} == {"fc.weight", "fc.bias"}
    load_weights(student, state, "modist", describe_student(cfg.model), STUDENT_HINT,
                 skip=("fc.",))  # as model.init=checkpoint
    x = torch.randn(2, 3, 4, 8, 8)
    student.eval(), rgb.eval()
    assert torch.equal(student.forward_features(x), rgb.encoder.forward_features(x))


def test_build_refuses_incomplete_configs_in_one_line(tmp_path):
    def cfg(*extra):
        return load_config(None, list(extra), cls=config_class("modist"))

    key, section = get_method("modist").SECTION
    assert key == "modist" and section is ModistConfig
    with pytest.raises(UserError, match="needs data.videos"):
        build(cfg())
    with pytest.raises(UserError, match=r"`distinit flow VIDEOS FLOW_DIR` and set data.flow_dir"):
        build(cfg(f"data.videos={tmp_path}"))
    with pytest.raises(UserError, match="needs distill.teachers"):
        build(cfg(f"data.videos={tmp_path}", "modist.motion=false", "modist.distill_weight=0.5"))
    for bad in ("modist.momentum=1", "modist.queue=0", "modist.temperature=0",
                "modist.key_chunks=0", "modist.weight_cross=-1"):
        with pytest.raises(ConfigError):
            cfg(bad)


# ---- two gloo processes ----

WORLD, GLOBAL_B, LR = 2, 8, 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_steps(batch: dict, ddp: bool) -> dict:
    """Two optimizer steps on `batch` (this process's part of the global batch), as the loop
    takes them: forward, backward, step, momentum update."""
    # key_chunks=1: chunks are cut per process (one process would encode its 8 keys in two
    # groups of 4, two processes theirs in groups of 2), a difference by design that matters
    # only with batch norm; with 1 the runs differ only in how the global batch is split.
    method = _method(key_chunks=1, queue=12, momentum=0.9)
    if ddp:
        method.trainable = nn.parallel.DistributedDataParallel(method.trainable)
    optimizer = torch.optim.SGD(method.student.parameters(), lr=LR)
    torch.manual_seed(1)  # the shuffles' permutations (rank 0's are used)
    out = {}
    for step in (1, 2):
        loss = method(batch)["loss"]
        loss.backward()
        out[f"loss{step}"] = loss.detach()
        out[f"grads{step}"] = {n: p.grad.clone() for n, p in method.student.named_parameters()}
        optimizer.step()
        optimizer.zero_grad()
        method.after_step(step)
    method.trainable = method.student
    out["state"] = method.state_dict()
    return out


def _two_rank_child(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                          world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        b = GLOBAL_B // WORLD
        half = {k: v[rank * b:(rank + 1) * b] for k, v in _batch(GLOBAL_B).items()}
        torch.save(_two_steps(half, ddp=True), f"{out_dir}/rank{rank}.pt")
    finally:
        td.destroy_process_group()
    leave_child()


def test_two_gloo_processes_equal_one_on_the_whole_batch(tmp_path):
    mp.spawn(_two_rank_child, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: the same summation order
    try:
        one = _two_steps(_batch(GLOBAL_B), ddp=False)
    finally:  # later tests compare runs across processes with the default thread count
        torch.set_num_threads(threads)
    # What holds on any CPU: the two runs sum in different orders (two half batches and an
    # all-reduce against one whole batch; other kernels on other CPUs), so each gradient agrees
    # to float32 rounding relative to its size, G_TOL = 1e-6 + 1e-5 |g|. A parameter after plain
    # SGD is p0 - lr (g1 + g2): it can differ by at most lr (G_TOL1 + G_TOL2), which for a small
    # bias with a large gradient is far above 1e-6 (seen on an AVX-512 Xeon without AMX).
    # Bitwise, only what one machine guarantees: both ranks hold the same state.
    bound = {n: torch.full_like(p, 1e-6) for n, p in one["grads1"].items()}
    for step in (1, 2):  # the second step's negatives are the first step's global keys
        assert torch.allclose((r0[f"loss{step}"] + r1[f"loss{step}"]) / 2, one[f"loss{step}"],
                              atol=1e-6, rtol=1e-5)
        for n, g in one[f"grads{step}"].items():  # DDP's average is the whole batch's gradient
            assert torch.allclose(r0[f"grads{step}"][n], g, atol=1e-6, rtol=1e-5), n
            bound[n] += LR * (1e-6 + 1e-5 * g.abs())
    for k, v in one["state"].items():  # online and key encoders, queues, pointers
        assert torch.equal(r0["state"][k], r1["state"][k]), k
        name = k.removeprefix("trainable.")
        if name in bound:  # the online encoder: the bound above
            assert ((r0["state"][k] - v).abs() <= bound[name]).all(), k
        elif k.startswith("key_"):  # m k + (1 - m) q: a convex mix of bounded differences
            assert torch.allclose(r0["state"][k], v, atol=max(b.max().item() for b in bound.values())), k
        elif v.is_floating_point():  # queued keys: unit vectors from those encoders
            assert torch.allclose(r0["state"][k], v, atol=1e-4), k
        else:  # pointers
            assert torch.equal(r0["state"][k], v), k
    assert int(one["state"]["queue_rgb.ptr"]) == 2 * GLOBAL_B % 12


def test_modist_momentum_schedule_reaches_one():
    """MSCL raises the key encoders' momentum on a cosine from m_base to 1 (moco.py:413-414):
    after the last step a key encoder no longer moves."""
    from distinit.methods.momentum import momentum_at

    assert momentum_at(0, 100, 0.994, "cosine") == pytest.approx(0.994)
    assert momentum_at(50, 100, 0.994, "cosine") == pytest.approx(0.997)
    assert momentum_at(100, 100, 0.994, "cosine") == pytest.approx(1.0)
    assert momentum_at(37, 100, 0.994, "constant") == 0.994
