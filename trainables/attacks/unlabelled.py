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

from undistill.errors import ConfigError
from undistill.tables import check_positive, is_a

from ..losses import soft_kd_loss
from ._base import Attack, Prepared, register_attack


@register_attack
@dataclass(frozen=True)
class UnlabelledKD(Attack):
    temperature: float

    name = "unlabelled"
    preset_keys = {"unlabelled_temperatures": list}

    @classmethod
    def resolve(cls, table):
        if "unlabelled_temperatures" not in table:
            return {}
        temperatures = table["unlabelled_temperatures"]
        if not all(is_a(t, float) for t in temperatures):
            raise ConfigError(f"attack.unlabelled_temperatures must list temperatures, got {temperatures!r}")
        for t in temperatures:
            check_positive("attack.unlabelled_temperatures", t)
        if len({f"{t:g}" for t in temperatures}) != len(temperatures):
            raise ConfigError(f"attack.unlabelled_temperatures lists a temperature twice: {temperatures!r}")
        return {"unlabelled_temperatures": sorted(float(t) for t in temperatures)}

    @classmethod
    def from_table(cls, resolved):
        return [cls(t) for t in resolved.get("unlabelled_temperatures", [])]

    @property
    def label(self) -> str:
        return f"unlabelled-T{self.temperature:g}"

    @property
    def kd_temperature(self) -> float:
        return self.temperature

    @property
    def kd_alpha(self) -> float:
        return 1.0  # the teacher's answers only

    def prepare(self, teacher, data, seed):
        # without augmentation every epoch shows the teacher the same inputs: ask it once
        seen = teacher.on(data.train_x, data.prepare) if data.augment is None else None
        temperature = self.temperature

        def loss_fn(m, x, y, idx):  # y is never read: the attacker has no labels
            t = seen[idx] if seen is not None else teacher(x)
            return soft_kd_loss(m(x), t, temperature=temperature)

        return Prepared(data, loss_fn)
