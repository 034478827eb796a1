"""Knowledge distillation (Hinton et al., 2015) at the attacker's temperature: the student
learns from the teacher's softened outputs, as the attacker sees them, and from the labels:

    L = α · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α) · CE(z_s, y)

(`losses.kd_loss`). An attacker does not know the defense's τ_A, so the preset lists the
temperatures it tries (`kd_temperatures`): one attack per temperature, `kd-T<T>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from undistill.errors import ConfigError
from undistill.tables import check_within, is_a

from ..losses import kd_loss
from ._base import Attack, Prepared, register_attack


@dataclass(frozen=True)
class AtTemperature(Attack):
    """An attack that distils at one temperature: one instance per temperature its preset lists,
    named `<name>-T<T>` in results (KD, KD without labels, the skeptical student)."""

    temperature: float

    @property
    def label(self) -> str:
        return f"{self.name}-T{self.temperature:g}"

    @property
    def kd_temperature(self) -> float:
        return self.temperature


@register_attack
@dataclass(frozen=True)
class KD(AtTemperature):
    alpha: float

    name = "kd"
    preset_keys = {"kd_temperatures": list, "kd_alpha": float}
    required_keys = ("kd_temperatures", "kd_alpha")

    @classmethod
    def resolve(cls, table):
        temperatures = check_temperatures("kd_temperatures", table["kd_temperatures"])
        check_within("attack.kd_alpha", table["kd_alpha"], 0, 1)
        return {"kd_temperatures": temperatures, "kd_alpha": float(table["kd_alpha"])}

    @classmethod
    def from_table(cls, resolved):
        return [cls(t, resolved["kd_alpha"]) for t in resolved.get("kd_temperatures", [])]

    @property
    def kd_alpha(self) -> float:
        return self.alpha

    def prepare(self, teacher, data, seed, schedule):
        targets, alpha, temperature = teacher_targets(teacher, data), self.alpha, self.temperature

        def loss_fn(m, x, y, idx):
            return kd_loss(m(x), targets(x, idx), y, alpha=alpha, temperature=temperature)

        return Prepared(data, loss_fn)


# A distillation temperature's range, as τ_A's (`defenses.nasty`): the soft term is scaled by T²,
# past 100 ten thousand times the label term, below 0.1 a hundredth of it.
TEMPERATURES = (0.1, 100.0)
TEMPERATURES_WHY = " (τ_A's range: the loss is scaled by T²)"


def check_temperatures(key: str, temperatures, *, empty: bool = False) -> list[float]:
    """`attack.<key>`: a list of positive temperatures (empty only where `empty`), none twice
    (its attacks are named `<name>-T<t:g>`), sorted."""
    if (not temperatures and not empty) or not all(is_a(t, float) for t in temperatures):
        raise ConfigError(f"attack.{key} must list temperatures, got {temperatures!r}")
    for t in temperatures:
        check_within(f"attack.{key}", t, *TEMPERATURES, why=TEMPERATURES_WHY)
    if len({f"{t:g}" for t in temperatures}) != len(temperatures):
        raise ConfigError(f"attack.{key} lists a temperature twice: {temperatures!r}")
    return sorted(float(t) for t in temperatures)


def teacher_targets(teacher, data):
    """(x, idx) -> the teacher's logits on a batch of the training split: without augmentation
    every epoch shows it the same inputs, so it is asked once for the whole split."""
    seen = teacher.on(data.train_x, data.prepare) if data.augment is None else None
    return lambda x, idx: seen[idx] if seen is not None else teacher(x)
