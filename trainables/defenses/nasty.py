"""Nasty Teacher, self-undermining KD (Ma et al., "Undistillable: Making A Nasty Teacher That
CANNOT teach students", ICLR 2021; code: VITA-Group/Nasty-Teacher). A teacher trained from
scratch to stay accurate while its softened outputs diverge from the normal teacher's:

    L = CE(z_T, y) − ω · τ_A² · KL(softmax(z_T/τ_A) ‖ softmax(z_A/τ_A))

(`losses.nasty_loss`, checked against the reference code in tests).
"""

from __future__ import annotations

from dataclasses import dataclass

from undistill.space import Knob

from ..losses import nasty_loss
from ._base import Defense, register_defense


@register_defense
@dataclass(frozen=True)
class Nasty(Defense):
    name = "nasty"
    colour = "tab:red"
    trains_teacher = True

    def knobs(self, num_classes: int) -> tuple[Knob, ...]:
        return (Knob("omega", "ω", 1e-6, 10.0, log=True),  # the KL term's weight
                Knob("tau_a", "τ_A", 0.1, 100.0, log=True))  # its temperature

    def teacher_loss(self, knobs, normal):
        omega, tau = float(knobs["omega"]), float(knobs["tau_a"])

        def loss_fn(m, x, y, idx):
            return nasty_loss(m(x), normal(x, idx), y, omega=omega, tau=tau)

        return loss_fn
