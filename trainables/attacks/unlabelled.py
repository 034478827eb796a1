"""An attacker without labels: KD on the teacher's answers alone (α = 1).

The attacker holds unlabelled inputs from the task's distribution (here the training split, its
labels withheld) and queries the black-box teacher on them; having no ground truth, it learns
from the teacher's softened outputs alone,

    L = T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))        (`losses.soft_kd_loss`)

which is Hinton et al.'s KD (2015) with the label term's weight α set to 1. Against a nasty
teacher the labels are what keeps a KD student on course where the soft targets mislead it, so
this attacker is the weaker one there; it is the threat model of a thief with data but no
annotations. One attack per temperature the preset lists (`unlabelled_temperatures`), named
`unlabelled-T<T>`, judged like every attack.

Departure, as for every attack here: the student's best epoch is picked on the labelled
validation split (the attacker is granted that, which only helps it).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..losses import soft_kd_loss
from ._base import Prepared, register_attack
from .kd import AtTemperature, check_temperatures, teacher_targets


@register_attack
@dataclass(frozen=True)
class UnlabelledKD(AtTemperature):
    name = "unlabelled"
    preset_keys = {"unlabelled_temperatures": list}

    @classmethod
    def resolve(cls, table):
        if "unlabelled_temperatures" not in table:
            return {}
        return {"unlabelled_temperatures": check_temperatures("unlabelled_temperatures",
                                                              table["unlabelled_temperatures"], empty=True)}

    @classmethod
    def from_table(cls, resolved):
        return [cls(t) for t in resolved.get("unlabelled_temperatures", [])]

    @property
    def kd_alpha(self) -> float:
        return 1.0  # the teacher's answers only

    def prepare(self, teacher, data, seed, schedule):
        targets, temperature = teacher_targets(teacher, data), self.temperature

        def loss_fn(m, x, y, idx):  # y is never read: the attacker has no labels
            return soft_kd_loss(m(x), targets(x, idx), temperature=temperature)

        return Prepared(data, loss_fn)
