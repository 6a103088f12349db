import math

import torch
import torch.nn.functional as F

from distinit.losses.distillation import logit_mse, soft_target_cross_entropy, weighted_mean
from distinit.targets.teachers import confidence_weights, entropy, teacher_targets


def test_eq1_averages_logits_over_frames_then_softmax_at_temperature():
    z = torch.tensor([[[1.0, 2.0, 3.0], [3.0, 0.0, 0.0]]])  # (B=1, T'=2, K=3)
    tau = 2.0
    avg = [(1 + 3) / 2, (2 + 0) / 2, (3 + 0) / 2]  # 2, 1, 1.5
    e = [math.exp(a / tau) for a in avg]
    expected = torch.tensor([[v / sum(e) for v in e]])
    assert torch.allclose(teacher_targets(z, tau), expected, atol=1e-6)
    # averaging probabilities instead of logits would give something else
    assert not torch.allclose(teacher_targets(z, tau), F.softmax(z / tau, -1).mean(1), atol=1e-3)


def test_eq2_by_hand_and_equals_kl_plus_target_entropy():
    y = torch.tensor([[0.7, 0.2, 0.1]])
    s = torch.tensor([[2.0, 1.0, -1.0]])
    log_f = [v - math.log(sum(math.exp(u) for u in (2.0, 1.0, -1.0))) for v in (2.0, 1.0, -1.0)]
    hand = -sum(yk * lf for yk, lf in zip((0.7, 0.2, 0.1), log_f, strict=True))
    ce = soft_target_cross_entropy(s, y)
    assert abs(ce.item() - hand) < 1e-5
    kl = F.kl_div(F.log_softmax(s, -1), y, reduction="batchmean")
    assert torch.allclose(ce, kl + entropy(y), atol=1e-5)


def test_entropy_filter_zero_weights_uncertain_examples():
    confident = torch.tensor([0.97, 0.01, 0.01, 0.01])
    uniform = torch.full((4,), 0.25)  # entropy ln 4 = 1.386
    y = torch.stack([confident, uniform])
    assert confidence_weights(y, 1.0).tolist() == [1.0, 0.0]
    assert confidence_weights(y, 0.0).tolist() == [1.0, 1.0]  # 0 = off
    per_example = torch.tensor([2.0, 100.0])
    assert weighted_mean(per_example, confidence_weights(y, 1.0)).item() == 2.0
    assert weighted_mean(per_example, torch.zeros(2)).item() == 0.0


def test_logit_mse():
    assert logit_mse(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])).item() == 2.5


def test_temperature_rescales_the_loss_by_tau_squared():
    """Hinton et al.: at temperature tau the soft-target gradient w.r.t. the logits is
    (softmax(z / tau) - y) / tau; times tau^2 it is tau (softmax(z / tau) - y), the scale of
    tau = 1's gradient, not 1 / tau^2 of it. At tau = 1 the loss is unchanged bit for bit."""
    from distinit.targets.teachers import TeacherTargets

    y = torch.tensor([[0.7, 0.2, 0.1]])
    z = torch.tensor([[2.0, 1.0, -1.0]])
    for tau in (1.0, 4.0):
        on = TeacherTargets([], [0.5] * 3, [0.25] * 3, temperature=tau)
        off = TeacherTargets([], [0.5] * 3, [0.25] * 3, temperature=tau, tau_squared=False)
        plain = soft_target_cross_entropy(z, y, tau)
        assert torch.equal(off.per_example_loss(z, y), plain)
        zz = z.clone().requires_grad_(True)
        on.per_example_loss(zz, y).sum().backward()
        hand = tau * (F.softmax(z / tau, -1) - y)
        assert torch.allclose(zz.grad, hand, atol=1e-6)
        if tau == 1.0:
            assert torch.equal(on.per_example_loss(z, y), plain)
        else:
            assert torch.allclose(on.per_example_loss(z, y), plain * tau**2)
