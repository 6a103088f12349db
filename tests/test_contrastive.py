"""MoCo-style building blocks: contrastive losses by hand, the key queue, the momentum encoder,
and the gather/shuffle helpers across two gloo processes."""

import math
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as td
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from toy import leave_child

from distinit.engine import dist
from distinit.losses.contrastive import info_nce, similarity_distillation
from distinit.methods.momentum import momentum_copy, momentum_update
from distinit.methods.queue import KeyQueue

Q = [[1.0, 0.0], [0.6, 0.8]]  # (B=2, D=2) unit vectors
K = [[0.8, 0.6], [0.0, 1.0]]
QUEUE = [[0.0, 1.0], [-1.0, 0.0], [0.6, -0.8]]  # (K=3, D=2)


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_info_nce_by_hand():
    t = 0.5
    hand = 0.0
    for q, k in zip(Q, K, strict=True):
        logits = [_dot(q, k) / t] + [_dot(q, n) / t for n in QUEUE]
        hand += -(logits[0] - math.log(sum(math.exp(z) for z in logits)))
    hand /= len(Q)
    loss = info_nce(torch.tensor(Q), torch.tensor(K), torch.tensor(QUEUE), t)
    assert loss.shape == () and abs(loss.item() - hand) < 1e-6


def test_info_nce_stays_float32_under_autocast():
    torch.manual_seed(0)
    q, k, queue = (F.normalize(torch.randn(n, 16), dim=1) for n in (8, 8, 64))
    exact = info_nce(q, k, queue, 0.07)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = info_nce(q, k, queue, 0.07)
    assert amp.dtype == torch.float32
    assert torch.allclose(amp, exact, atol=1e-6)


def test_similarity_distillation_by_hand():
    student, teacher = Q, K
    ts, tt = 0.1, 0.05
    hand = 0.0
    for s, t in zip(student, teacher, strict=True):
        zs = [_dot(s, n) / ts for n in QUEUE]
        zt = [_dot(t, n) / tt for n in QUEUE]
        log_ps = [z - math.log(sum(math.exp(u) for u in zs)) for z in zs]
        pt = [math.exp(z) / sum(math.exp(u) for u in zt) for z in zt]
        hand += sum(p * (math.log(p) - lp) for p, lp in zip(pt, log_ps, strict=True))
    hand /= len(student)
    loss = similarity_distillation(torch.tensor(student), torch.tensor(teacher),
                                   torch.tensor(QUEUE), ts, tt)
    assert abs(loss.item() - hand) < 1e-5 * max(1.0, hand)


def test_similarity_distillation_zero_for_identical_and_target_detached():
    torch.manual_seed(0)
    q, queue = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(16, 8), dim=1)
    assert abs(similarity_distillation(q, q, queue, 0.1, 0.1).item()) < 1e-6
    student = q.clone().requires_grad_(True)
    teacher = F.normalize(torch.randn(4, 8), dim=1).requires_grad_(True)
    similarity_distillation(student, teacher, queue, 0.1, 0.04).backward()
    assert student.grad is not None and teacher.grad is None


def _ids(n: int, first: int = 0) -> torch.Tensor:
    """Keys whose first coordinate names them: (n, 2) rows [i, -i]."""
    i = torch.arange(first, first + n, dtype=torch.float32)
    return torch.stack([i, -i], dim=1)


def test_queue_starts_normalised_and_writes_in_order():
    torch.manual_seed(0)
    queue = KeyQueue(5, 2)
    assert torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    start = queue.keys.clone()
    queue.enqueue(_ids(2, 10))
    assert queue.keys[:2, 0].tolist() == [10.0, 11.0] and int(queue.ptr) == 2
    assert torch.equal(queue.keys[2:], start[2:])
    queue.enqueue(_ids(1, 12))
    assert queue.keys[:3, 0].tolist() == [10.0, 11.0, 12.0] and int(queue.ptr) == 3


def test_queue_wraps_around_when_the_batch_crosses_the_end():
    queue = KeyQueue(5, 2)
    start = queue.keys.clone()
    queue.enqueue(_ids(3, 0))  # slots 0-2
    assert queue.keys[:3, 0].tolist() == [0, 1, 2] and int(queue.ptr) == 3
    assert torch.equal(queue.keys[3:], start[3:])
    queue.enqueue(_ids(3, 3))  # slots 3, 4, then 0
    assert queue.keys[:, 0].tolist() == [5, 1, 2, 3, 4] and int(queue.ptr) == 1
    queue.enqueue(_ids(3, 6))  # slots 1-3
    assert queue.keys[:, 0].tolist() == [5, 6, 7, 8, 4] and int(queue.ptr) == 4
    assert torch.equal(queue.keys[:, 1], -queue.keys[:, 0])


def test_queue_batch_longer_than_queue_keeps_the_last_keys():
    torch.manual_seed(0)
    queue = KeyQueue(5, 2)
    queue.enqueue(_ids(2, 0))
    queue.enqueue(_ids(7, 10))  # 10..16 from slot 2: only 12..16 survive
    assert queue.keys[:, 0].tolist() == [13, 14, 15, 16, 12] and int(queue.ptr) == 4
    # the same as writing one key at a time
    torch.manual_seed(0)
    one_by_one = KeyQueue(5, 2)
    for key in torch.cat([_ids(2, 0), _ids(7, 10)]):
        one_by_one.enqueue(key[None])
    assert torch.equal(one_by_one.keys, queue.keys) and int(one_by_one.ptr) == int(queue.ptr)


def test_queue_state_dict_round_trip_and_dtype():
    torch.manual_seed(0)
    queue = KeyQueue(5, 2)
    queue.enqueue(_ids(3, 0).to(torch.bfloat16))
    assert queue.keys.dtype == torch.float32
    torch.manual_seed(1)
    restored = KeyQueue(5, 2)
    assert not torch.equal(restored.keys, queue.keys)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.keys, queue.keys) and int(restored.ptr) == 3
    assert set(queue.state_dict()) == {"keys", "ptr"}
    with pytest.raises(ValueError, match="expected"):
        queue.enqueue(torch.zeros(3, 4))


def test_queue_enqueue_between_loss_and_backward():
    """The method enqueues inside its forward; the loop calls backward afterwards."""
    torch.manual_seed(0)
    queue = KeyQueue(8, 4)
    q = F.normalize(torch.randn(3, 4), dim=1).requires_grad_(True)
    k = F.normalize(torch.randn(3, 4), dim=1)
    loss = info_nce(q, k, queue(), 0.2)
    queue.enqueue(k)
    loss.backward()
    assert q.grad is not None


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def test_momentum_copy_is_frozen_independent_and_in_train_mode():
    net = _tiny_net().eval()
    key = momentum_copy(net)
    assert key.training and not net.training
    assert all(not p.requires_grad for p in key.parameters())
    assert all(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert not torch.equal(key[0].weight, net[0].weight)


def test_momentum_update_exact_values_and_buffers():
    torch.manual_seed(0)
    source, target = _tiny_net(), _tiny_net()
    with torch.no_grad():
        source[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        target[0].weight.copy_(torch.tensor([[10.0, 0.0], [-10.0, 5.0]]))
    source(torch.randn(8, 2))  # train-mode forward: moves source's running statistics
    before = {n: p.clone() for n, p in target.named_parameters()}
    momentum_update(target, source, 0.9)
    expected = [[0.9 * 10 + 0.1 * 1, 0.9 * 0 + 0.1 * 2], [0.9 * -10 + 0.1 * 3, 0.9 * 5 + 0.1 * 4]]
    assert torch.allclose(target[0].weight, torch.tensor(expected), atol=1e-6)
    for name, p in source.named_parameters():
        assert torch.allclose(dict(target.named_parameters())[name],
                              0.9 * before[name] + 0.1 * p, atol=1e-6)
    for (name, t), (_, s) in zip(target.named_buffers(), source.named_buffers(), strict=True):
        assert torch.equal(t, s), name
    assert int(target[1].num_batches_tracked) == 1
    frozen = {n: p.clone() for n, p in target.named_parameters()}
    momentum_update(target, source, 1.0)
    assert all(torch.equal(p, frozen[n]) for n, p in target.named_parameters())


def test_momentum_update_rejects_different_modules():
    with pytest.raises(ValueError, match="shape"):
        momentum_update(nn.Linear(2, 2), nn.Linear(2, 3), 0.9)
    with pytest.raises(ValueError, match="only in target"):
        momentum_update(_tiny_net(), nn.Sequential(nn.Linear(2, 2)), 0.9)
    with pytest.raises(ValueError, match="DDP"):
        momentum_update(_tiny_net(), nn.Sequential(_tiny_net()), 0.9)


# ---- two gloo processes ----

WORLD, LOCAL_B, DIM, QUEUE_SIZE = 2, 2, 2, 5  # a global batch of 4 wraps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_keys(rank: int, step: int) -> torch.Tensor:
    """This rank's keys at this step: ids 100*step + 10*rank + i."""
    return _ids(LOCAL_B, 100 * step + 10 * rank)


def _two_rank_child(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                          world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        out = {}
        local = torch.arange(LOCAL_B * DIM, dtype=torch.float32).view(LOCAL_B, DIM) + 100 * rank
        out["local"] = local
        out["gathered"] = dist.gather_tensor(local)
        torch.manual_seed(rank)  # different RNG per rank: only the broadcast makes them agree
        shuffled, idx = dist.shuffle_batch(local)
        out["shuffled"], out["idx"] = shuffled, idx
        out["restored"] = dist.unshuffle_batch(shuffled, idx)
        torch.manual_seed(0)  # alike on every rank, as training seeds the model's init
        queue = KeyQueue(QUEUE_SIZE, DIM)
        for step in range(3):
            queue.enqueue(_rank_keys(rank, step))
        out["queue"], out["ptr"] = queue.keys.clone(), queue.ptr.clone()
        try:
            dist.gather_tensor(torch.zeros(2 + rank, DIM))
            out["uneven"] = "no error"
        except ValueError as e:
            out["uneven"] = str(e)
        torch.save(out, f"{out_dir}/rank{rank}.pt")
    finally:
        td.destroy_process_group()
    leave_child()


def test_gather_shuffle_and_queue_across_two_gloo_processes(tmp_path):
    mp.spawn(_two_rank_child, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    everything = torch.cat([r0["local"], r1["local"]])
    for r in (r0, r1):
        assert torch.equal(r["gathered"], everything)  # rank order
        assert torch.equal(r["restored"], r["local"])  # unshuffle undoes shuffle
        assert r["shuffled"].shape == r["local"].shape
        assert "same shape on every rank" in r["uneven"] and "(2, 2), (3, 2)" in r["uneven"]
    assert torch.equal(r0["idx"], r1["idx"])  # rank 0's permutation on both
    union = torch.cat([r0["shuffled"], r1["shuffled"]])  # rows are unique: compare as sets
    assert sorted(map(tuple, union.tolist())) == sorted(map(tuple, everything.tolist()))
    assert torch.equal(union, everything[r0["idx"].argsort()])  # idx inverts the permutation
    # both ranks hold the queue one process holds after enqueuing each global batch
    assert torch.equal(r0["queue"], r1["queue"]) and torch.equal(r0["ptr"], r1["ptr"])
    torch.manual_seed(0)
    single = KeyQueue(QUEUE_SIZE, DIM)
    for step in range(3):
        single.enqueue(torch.cat([_rank_keys(r, step) for r in range(WORLD)]))
    assert torch.equal(r0["queue"], single.keys) and torch.equal(r0["ptr"], single.ptr)


def test_world_of_one_shuffle_is_a_permutation_undone_by_unshuffle():
    torch.manual_seed(0)
    x = torch.arange(12, dtype=torch.float32).view(6, 2).requires_grad_(True)
    shuffled, idx = dist.shuffle_batch(x)
    assert sorted(shuffled[:, 0].tolist()) == x[:, 0].tolist() and idx.shape == (6,)
    assert torch.equal(dist.unshuffle_batch(shuffled, idx), x.detach())
    assert not shuffled.requires_grad  # key branch only, as with several processes
    assert dist.gather_tensor(x) is not x and torch.equal(dist.gather_tensor(x), x.detach())
