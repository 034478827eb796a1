"""Adversarial Sparse Teacher (Yilmaz and Keles, 2024): its EPD loss, its step and its PGD
against the authors' code (codeofanon/AdversarialSparseTeacher) and by hand."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.defenses.adversarial_sparse import ast_loss, pgd
from trainables.losses import epd_loss


def their_step(output_batch, adv_output_batch, labels_batch, params_sparse, T, alpha):
    """train_adv_teacher.py's step after both forward passes, verbatim but for the names it takes."""
    adv_loss_fn = nn.KLDivLoss(reduction='batchmean', log_target=True)
    num_keep = params_sparse
    topk_values, topk_indices = torch.topk(adv_output_batch, num_keep, dim=1)
    sparse_logits = torch.full(adv_output_batch.shape, float("-inf")).to(adv_output_batch.device)
    row = torch.tensor([[i] * num_keep for i in range(topk_indices.shape[0])]).to(
        adv_output_batch.device)
    sparse_logits[row, topk_indices] = topk_values
    out_probs = F.softmax(output_batch / T, dim=1)
    adv_probs = F.softmax(sparse_logits / T, dim=1)
    kl_loss = adv_loss_fn(out_probs, adv_probs)
    return kl_loss * (alpha * T * T) + nn.CrossEntropyLoss()(output_batch, labels_batch) * (1. - alpha)


def their_pgd(model, images, labels, eps=0.3, alpha=0.01, iters=40):
    """create_adv_dataset.py's pgd_attack, verbatim."""
    loss = nn.CrossEntropyLoss()
    original_images = images.clone()
    for i in range(iters):  # noqa: B007  (verbatim)
        images.requires_grad = True
        outputs = model(images)
        model.zero_grad()
        cost = loss(outputs, labels).to(images.device)
        cost.backward()
        adv_images = images + alpha * images.grad.sign()
        eta = torch.clamp(adv_images - original_images, min=-eps, max=eps)
        images = torch.clamp(original_images + eta, min=0, max=1).detach_()
    return images


def test_epd_by_hand():
    p, q = [[0.7, 0.2, 0.1]], [[0.6, 0.4, 0.0]]
    expected = sum(math.exp(qi) * (qi - pi) for pi, qi in zip(p[0], q[0], strict=True))
    assert epd_loss(torch.tensor(p), torch.tensor(q)).item() == pytest.approx(expected, rel=1e-5)
    # not the KL divergence it is named after
    kl = sum(qi * math.log(qi / pi) for pi, qi in zip(p[0], q[0], strict=True) if qi > 0)
    assert abs(expected - kl) > 0.1


@pytest.mark.parametrize("k", [1, 2, 7])
def test_the_loss_and_its_gradient_equal_the_authors_step(k):
    gen = torch.Generator().manual_seed(k)
    z = (torch.randn(32, 10, generator=gen) * 3).requires_grad_(True)
    z_adv, y = torch.randn(32, 10, generator=gen) * 3, torch.randint(0, 10, (32,), generator=gen)
    theirs = their_step(z, z_adv, y, k, T=6.0, alpha=0.05)
    (their_grad,) = torch.autograd.grad(theirs, z)
    ours = ast_loss(z, z_adv, y, alpha=0.05, temperature=6.0, k=k)
    (our_grad,) = torch.autograd.grad(ours, z)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    torch.testing.assert_close(our_grad, their_grad)


def test_pgd_equals_the_authors_where_their_pixel_clamp_does_not_bind():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5)).eval()
    x = 0.35 + 0.3 * torch.rand(8, 3, 2, 2)  # ±0.3 stays inside [0, 1]
    y = torch.randint(0, 5, (8,))
    for p in model.parameters():
        p.requires_grad_(False)  # as the frozen normal teacher
    ours = pgd(model, x, y)
    theirs = their_pgd(model, x.clone(), y)
    torch.testing.assert_close(ours, theirs)
    assert (ours - x).abs().max() <= 0.3 + 1e-6
    assert F.cross_entropy(model(ours), y) > F.cross_entropy(model(x), y)  # it is an attack
