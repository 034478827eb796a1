"""The losses of the three kinds of training, and the Stingy Teacher's sparse logits.

Shapes: logits are (N, classes), labels (N,) int64. KL terms use `reduction="batchmean"`, the
mathematical KL averaged over the batch, as the public Nasty-Teacher and KD code does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from undistill.errors import ConfigError


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0):
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Hinton KD: α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α)·CE(z_s, y).

    `teacher_logits` may hold −inf (a stingy teacher's masked classes): with a probability target
    (log_target=False) kl_div treats 0·log 0 as 0, so masked classes add nothing, as they should.
    """
    T = temperature
    # float32 before the temperature: under bf16 autocast the logits arrive in bf16, and the
    # soft targets at T = 20 differ in digits bf16 does not keep
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    teacher_probs = F.softmax(teacher_logits.detach() / T, dim=1)
    student_log_probs = F.log_softmax(student_logits / T, dim=1)
    distill = F.kl_div(student_log_probs, teacher_probs, reduction="batchmean")
    return alpha * T * T * distill + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def soft_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """KD without labels: T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), `kd_loss` at α = 1 to the last
    bit, with no label term at all (an attacker who only queries the teacher has none)."""
    T = temperature
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()  # see kd_loss
    teacher_probs = F.softmax(teacher_logits.detach() / T, dim=1)
    student_log_probs = F.log_softmax(student_logits / T, dim=1)
    return T * T * F.kl_div(student_log_probs, teacher_probs, reduction="batchmean")


# the code's fixed weights of its self-distillation pair: the deepest auxiliary exit learns from
# the final one (KL at the attack's temperature) and from the labels
SELF_DISTIL_WEIGHT, SELF_LABEL_WEIGHT = 0.3, 0.7


def skeptical_loss(
    exits: list[torch.Tensor],
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    kd_exit: int,
) -> torch.Tensor:
    """The skeptical student's loss past its warm-up (ksouvik52/Skeptical2021, `loss_fn_kd` of
    train_kd_to_SD.py), on `exits` = [final, deepest auxiliary, ..., shallowest] logits:

        kd_loss(exits[kd_exit], teacher)                      the teacher taught at a shallow exit
      + 0.3 · KL(softmax(z_0/T) ‖ softmax(z_1/T))          the final exit teaches exit 1
      + 0.7 · CE(z_1, y) + CE(z_0, y)

    The self-distillation KL has no T² and its target, the final exit, is not detached: as in
    the code, its gradient reaches both exits. One departure: the code passes that target as
    probabilities, whose gradient is log p, −∞ (NaN) wherever a confident final exit's
    probability underflows to 0 (an MNIST-1D MLP at T = 1 diverged so in its 17th epoch); here
    it goes in log space, the same value and gradient wherever the code's are finite.
    """
    T = temperature
    exits = [z.float() for z in exits]  # see kd_loss
    final, deepest = exits[0], exits[1]
    self_distil = F.kl_div(F.log_softmax(deepest / T, dim=1), F.log_softmax(final / T, dim=1),
                           reduction="batchmean", log_target=True)
    return (kd_loss(exits[kd_exit], teacher_logits, labels, alpha=alpha, temperature=T)
            + SELF_DISTIL_WEIGHT * self_distil + SELF_LABEL_WEIGHT * F.cross_entropy(deepest, labels)
            + F.cross_entropy(final, labels))


def nasty_loss(
    nasty_logits: torch.Tensor,
    adversary_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    omega: float,
    tau: float,
) -> torch.Tensor:
    """Self-undermining loss: CE(z_T, y) − ω·τ²·KL(softmax(z_T/τ) ‖ softmax(z_A/τ)).

    The trainable network's distribution is the *first* KL argument, i.e. kl_div's target, and
    gradients must flow through it; the adversary (the frozen normal teacher) gets none.
    """
    nasty_logits, adversary_logits = nasty_logits.float(), adversary_logits.float()  # see kd_loss
    nasty_log_probs = F.log_softmax(nasty_logits / tau, dim=1)
    adversary_log_probs = F.log_softmax(adversary_logits.detach() / tau, dim=1)
    # log_target=True keeps the trainable side in log space: no log(0) as its softmax saturates.
    divergence = F.kl_div(adversary_log_probs, nasty_log_probs, reduction="batchmean", log_target=True)
    return F.cross_entropy(nasty_logits, labels) - omega * tau * tau * divergence


def epd_loss(probs: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Exponential Predictive Divergence (Adversarial Sparse Teacher, Yilmaz and Keles 2024) as
    its code computes it: `nn.KLDivLoss(reduction="batchmean", log_target=True)(p, q)` called
    on probabilities, which is (1/N) Σ_n Σ_c e^{q_nc} · (q_nc − p_nc). Its gradient in p is
    −e^{q}/N: every class's probability is pushed up, the more so where the target q is high
    (a class the target masks, q = 0, still by e^0 = 1)."""
    return F.kl_div(probs.float(), target_probs.float(), reduction="batchmean", log_target=True)


def stingy_logits(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep each row's top-k logits and set the rest to −inf (the Stingy Teacher's sparse output).

    Top-1 survives, so the teacher's predictions, and its accuracy, are unchanged.
    """
    if not 1 <= k <= logits.shape[1]:
        raise ConfigError(f"stingy k={k} must be between 1 and the number of classes ({logits.shape[1]})")
    top = logits.topk(k, dim=1).indices
    masked = torch.full_like(logits, float("-inf"))
    return masked.scatter(1, top, logits.gather(1, top))
