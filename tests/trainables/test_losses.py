import math

import pytest
import torch
import torch.nn.functional as F
from _hand import kl, softmax

from trainables.defenses import create_defense
from trainables.losses import kd_loss, nasty_loss, stingy_logits
from undistill.errors import ConfigError


def test_nasty_loss_matches_hand_computation_and_kl_direction():
    z_nasty, z_adv, y = [2.0, 0.5, -1.0], [0.0, 1.0, 3.0], 0
    omega, tau = 0.04, 4.0
    p_nasty, p_adv = softmax(z_nasty, tau), softmax(z_adv, tau)
    ce = -math.log(softmax(z_nasty)[y])
    expected = ce - omega * tau**2 * kl(p_nasty, p_adv)  # KL(nasty ‖ adversary)
    wrong_direction = ce - omega * tau**2 * kl(p_adv, p_nasty)
    got = nasty_loss(torch.tensor([z_nasty]), torch.tensor([z_adv]), torch.tensor([y]),
                     omega=omega, tau=tau).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert abs(got - wrong_direction) > 1e-3  # the test can tell the two directions apart


def test_nasty_loss_gradient_reaches_the_nasty_side_only():
    z_nasty = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
    z_adv = torch.tensor([[0.0, 1.0, 3.0]], requires_grad=True)
    nasty_loss(z_nasty, z_adv, torch.tensor([0]), omega=0.04, tau=4.0).backward()
    assert z_nasty.grad is not None and z_nasty.grad.abs().sum() > 0
    assert z_adv.grad is None
    # The KL term is maximised: its gradient alone pushes away from the adversary.
    z = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
    ce_only = F.cross_entropy(z, torch.tensor([0]))
    (g_ce,) = torch.autograd.grad(ce_only, z)
    assert not torch.allclose(z_nasty.grad, g_ce)


def test_kd_loss_matches_hand_computation():
    zs, zt, y, alpha, T = [1.0, 0.0, -1.0], [3.0, 1.0, 0.0], 2, 0.9, 4.0
    expected = alpha * T * T * kl(softmax(zt, T), softmax(zs, T)) + (1 - alpha) * -math.log(softmax(zs)[y])
    got = kd_loss(torch.tensor([zs]), torch.tensor([zt]), torch.tensor([y]), alpha=alpha, temperature=T)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_the_unlabelled_attackers_loss_is_kd_without_the_label_term_by_hand():
    """T²·KL(p_t ‖ p_s) at T: hand values, and `kd_loss` at α = 1 to the last bit; the
    attack's loss never reads the labels."""
    from trainables.attacks import create_attack
    from trainables.losses import soft_kd_loss

    zs, zt = [[1.0, 0.0, -1.0], [0.2, 0.4, 0.1]], [[3.0, 1.0, 0.0], [-1.0, 2.0, 0.5]]
    for T in (1.0, 4.0, 20.0):
        expected = sum(T * T * kl(softmax(t, T), softmax(s, T)) for s, t in zip(zs, zt, strict=True)) / 2
        got = soft_kd_loss(torch.tensor(zs), torch.tensor(zt), temperature=T)
        assert got.item() == pytest.approx(expected, rel=1e-4)  # float32 against float64
        with_labels = kd_loss(torch.tensor(zs), torch.tensor(zt), torch.tensor([0, 2]), alpha=1.0, temperature=T)
        assert torch.equal(got, with_labels)
    attack = create_attack("unlabelled", temperature=4.0)
    assert (attack.label, attack.kd_temperature, attack.kd_alpha) == ("unlabelled-T4", 4.0, 1.0)


def test_kd_loss_does_not_backpropagate_into_the_teacher():
    zt = torch.tensor([[3.0, 1.0, 0.0]], requires_grad=True)
    zs = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
    kd_loss(zs, zt, torch.tensor([0]), alpha=0.9, temperature=4.0).backward()
    assert zt.grad is None and zs.grad.abs().sum() > 0


def test_stingy_keeps_top_k_and_masks_the_rest():
    z = torch.tensor([[0.1, 3.0, -2.0, 1.5], [4.0, 0.0, 0.5, 0.2]])
    out = stingy_logits(z, 2)
    assert torch.equal(torch.isinf(out), torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool))
    assert out[0, 1] == 3.0 and out[0, 3] == 1.5 and out[1, 0] == 4.0 and out[1, 2] == 0.5
    assert torch.equal(out.argmax(1), z.argmax(1))  # top-1, hence accuracy, unchanged
    with pytest.raises(ConfigError):
        stingy_logits(z, 5)
    assert torch.equal(create_defense("stingy").transform(z, {"k": 4}), z)


def test_kd_through_a_stingy_teacher_is_finite_and_matches_the_renormalisedkl():
    zt, zs, T = torch.tensor([[3.0, 1.0, 0.0, -1.0]]), torch.tensor([[0.5, 0.2, 0.1, 0.0]]), 4.0
    masked = stingy_logits(zt, 2)
    loss = kd_loss(zs, masked, torch.tensor([0]), alpha=1.0, temperature=T)
    p = softmax([3.0, 1.0], T) + [0.0, 0.0]  # mass only on the two kept classes
    expected = T * T * kl(p, softmax(zs[0].tolist(), T))
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(expected, rel=1e-5)
