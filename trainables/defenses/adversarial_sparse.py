"""Adversarial Sparse Teacher (Yilmaz and Keles, "Adversarial Sparse Teacher: Defense Against
Distillation-Based Model Stealing Attacks Using Adversarial Examples", arXiv 2403.05181, 2024;
code: codeofanon/AdversarialSparseTeacher, train_adv_teacher.py and create_adv_dataset.py).

A teacher trained from scratch, like the nasty one, to stay accurate while its outputs carry a
few altered peaks and a high entropy. Once, before it trains, every training sample gets an
adversarial version by PGD against the frozen normal teacher (L∞, ε = 0.3, step 0.01, 40
steps, the code's). Each step then asks the teacher being trained, in eval mode and without a
graph, for its logits on the batch's adversarial versions, keeps their top k (the rest −inf: the
Stingy Teacher's sparse logits) and trains on

    L = α · T² · EPD(softmax(z/T), softmax(sparse(z_adv)/T)) + (1 − α) · CE(z, y)

where EPD, the paper's Exponential Predictive Divergence, is what its code computes
(`losses.epd_loss`). The attacker sees the teacher's logits as they are (the code's KD reads
them whole). Knobs: `ast_alpha` (α), `ast_t` (T), `ast_k` (k); the code's CIFAR-10 ResNet-18
runs at α = 0.05, T = 6, k = 2, its CIFAR-100 ones at α = 0.03–0.035, T = 30, k = 7.

Departures, each deliberate:
- A batch is paired with its own samples' adversarial versions. The code zips a shuffled clean
  loader with an unshuffled adversarial one, so its pairs are different images; the paper
  describes the adversarial response as the altered version of the sample's own.
- PGD runs on the inputs as the model takes them (normalised) without the code's clamp to
  [0, 1], which on normalised CIFAR images cuts off every pixel below the channel mean and
  means nothing for MNIST-1D's signals; with augmentation, on the un-augmented sample (the code
  attacks one augmented view, drawn once).
- The adversarial set is made inside each defended teacher's phase (the code makes it once per
  normal teacher and shares it): 40 forward and backward passes of the normal teacher over the
  training split per candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from undistill.space import Knob

from ..loop import fast_math, to_device_layout
from ..losses import epd_loss, stingy_logits
from ._base import Defense, register_defense

# PGD against the normal teacher, the code's `pgd_attack` defaults
PGD_EPS, PGD_STEP, PGD_STEPS = 0.3, 0.01, 40
PGD_BATCH = 128  # the code's (its loader's batch)


def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = PGD_EPS, step: float = PGD_STEP,
        steps: int = PGD_STEPS) -> torch.Tensor:
    """The code's PGD: `steps` signed-gradient ascents of CE(model(x'), y) by `step`, each
    projected back into the L∞ ball of radius `eps` around x (no clamp to a pixel range)."""
    original = x.detach()
    adv = original.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv).float(), y), adv)
        adv = (original + (adv.detach() + step * grad.sign() - original).clamp(-eps, eps)).detach()
    return adv


def adversarial_split(model: torch.nn.Module, data) -> torch.Tensor:
    """Every training sample's adversarial version, as the model takes inputs (prepared). On a
    GPU the attack's passes run under the phases' bf16 autocast, a batch as large as a training
    one at a time: a frozen ResNet-50 keeps about 36 MB per image for its input gradient in
    float32, and a fractional-GPU worker has a share of the memory."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.enable_grad(), fast_math(data.train_x.device):
            for i in range(0, len(data.train_y), PGD_BATCH):
                x = to_device_layout(data.prepare(data.train_x[i : i + PGD_BATCH]))
                out.append(pgd(model, x, data.train_y[i : i + PGD_BATCH]).float())
    finally:
        model.train(was_training)
    return torch.cat(out)


def ast_loss(logits: torch.Tensor, adversarial_logits: torch.Tensor, labels: torch.Tensor, *, alpha: float,
             temperature: float, k: int) -> torch.Tensor:
    """α·T²·EPD(softmax(z/T), softmax(top-k(z_adv)/T)) + (1 − α)·CE(z, y), as the code's step."""
    T = temperature
    logits = logits.float()
    target = F.softmax(stingy_logits(adversarial_logits.float().detach(), k) / T, dim=1)
    divergence = epd_loss(F.softmax(logits / T, dim=1), target)
    return alpha * T * T * divergence + (1 - alpha) * F.cross_entropy(logits, labels)


@register_defense
@dataclass(frozen=True)
class AdversarialSparse(Defense):
    name = "ast"
    colour = "tab:green"
    trains_teacher = True

    def knobs(self, num_classes: int) -> tuple[Knob, ...]:
        return (Knob("ast_alpha", "α", 1e-4, 1.0, log=True),  # the EPD term's weight against CE
                Knob("ast_t", "T", 0.1, 100.0, log=True),  # its temperature
                Knob("ast_k", "k", 1, num_classes - 1, integer=True,
                     why=f": the adversarial target keeps its k largest of {num_classes} logits, "
                         f"so 1 ≤ k < {num_classes}"))

    def teacher_loss(self, knobs, normal):
        alpha, T, k = float(knobs["ast_alpha"]), float(knobs["ast_t"]), int(knobs["ast_k"])
        adversarial = adversarial_split(normal.model, normal.data)

        def loss_fn(m, x, y, idx):
            logits = m(x)
            was_training = m.training
            m.eval()  # the code asks the teacher in eval mode, without a graph
            try:
                with torch.no_grad():
                    adversarial_logits = m(adversarial[idx])
            finally:
                m.train(was_training)
            return ast_loss(logits, adversarial_logits, y, alpha=alpha, temperature=T, k=k)

        return loss_fn
