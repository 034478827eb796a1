"""Data-free KD as DAFL publishes it (Chen et al., "Data-Free Learning of Student Networks",
ICCV 2019; code: huawei-noah/Efficient-Computing, Data-Efficient-Model-Compression/DAFL): the
attacker has the teacher and no data. A generator and the student train together, every step on
a fresh batch: the generator towards inputs the teacher, as the attacker sees it, classifies
confidently, evenly and with strong features; the student by distillation on them alone (no
labels). The machinery, and where it departs from the code, is in `trainables.data_free`.

A preset's `[attack.data_free]` table sets the generator's side (`DataFreeSpec`: `latent_dim`,
`generator_lr`, the three loss weights, `iterations` per epoch, `kd_temperature`) and, in
`[attack.data_free.student_schedule]`, the student's optimizer, lr schedule, epochs and batch
size (the batch is the generator's too). Left out, each is the code's default, its MNIST run:
latent 100, Adam 0.2, weights 1 / 5 / 0.1, 120 iterations, T = 1; the student by Adam 2e-3,
constant, 200 epochs of batches of 512.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from undistill.errors import ConfigError
from undistill.tables import check_keys, check_within

from ..data_free import DataFreeSpec, DataFreeSteps
from ..loop import MAX_LR, Schedule, check_schedule_table, scale_schedule_table
from ._base import Attack, Prepared, register_attack
from .kd import TEMPERATURES, TEMPERATURES_WHY

# The code's student under its defaults (the MNIST run): Adam at --lr_S 2e-3, no weight decay,
# no lr steps (those are CIFAR's), --n_epochs 200, --batch_size 512.
REFERENCE_STUDENT_SCHEDULE = Schedule(optimizer="adam", lr=2e-3, weight_decay=0.0, epochs=200,
                                      batch_size=512, lr_schedule="constant")
_SPEC_KEYS = {"latent_dim": int, "generator_width": int, "generator_lr": float, "one_hot_weight": float,
              "entropy_weight": float, "activation_weight": float, "iterations": int, "kd_temperature": float}
_KEYS = {**_SPEC_KEYS, "student_schedule": dict}
# Each number's range: (low, high, low end open, why). The sizes are bounded ten times past the
# code's largest (latent 1,000 and width 128 on CIFAR, 120 iterations): the generator's first
# layer alone holds latent × width × a quarter of the input (CIFAR: 64 positions) weights.
_RANGES = {
    "latent_dim": (1, 10_000, False, ": ten times the code's CIFAR latent (1,000)"),
    "generator_width": (2, 1_024, False, ": the generator's BatchNorm needs 2 channels; eight times the code's 128"),
    "iterations": (1, 100_000, False, ""),
    "generator_lr": (0, MAX_LR, True, ": past it Adam diverges"),
    "kd_temperature": (*TEMPERATURES, False, TEMPERATURES_WHY),
    "one_hot_weight": (0, 1_000, False, ""),
    "entropy_weight": (0, 1_000, False, ""),
    "activation_weight": (0, 1_000, False, ""),
}


@register_attack
@dataclass(frozen=True)
class DAFL(Attack):
    spec: DataFreeSpec
    schedule: Schedule  # the student's: its epochs count `spec.iterations` joint steps each

    name = "dafl"
    preset_keys = {"data_free": dict}
    trains_on_real_data = False  # a generator's samples, drawn afresh every step
    students_share_steps = True  # the generator never sees the students: one serves them all

    @classmethod
    def resolve(cls, table):
        data_free = table.get("data_free")
        if data_free is None:
            return {}
        check_keys("attack.data_free", data_free, _KEYS)
        for key, (low, high, low_open, why) in _RANGES.items():
            if key in data_free:
                check_within(f"attack.data_free.{key}", data_free[key], low, high, low_open=low_open, why=why)
        schedule = REFERENCE_STUDENT_SCHEDULE.to_dict()
        if "student_schedule" in data_free:  # a whole schedule, as [student_schedule] is
            where = "attack.data_free.student_schedule"
            # the keys it leaves out are the code's (constant lr, no weight decay), not [student_schedule]'s
            schedule = {**schedule, **check_schedule_table(where, data_free["student_schedule"])}
            if schedule["batch_size"] < 2:  # the generator's BatchNorm needs 2
                raise ConfigError(f"{where}.batch_size must be ≥ 2 (the generator's BatchNorm), "
                                  f"got {schedule['batch_size']!r}")
        given = {k: float(v) if _SPEC_KEYS[k] is float else v for k, v in data_free.items() if k in _SPEC_KEYS}
        return {"data_free": {**asdict(DataFreeSpec()), **given, "student_schedule": schedule}}

    @classmethod
    def from_table(cls, resolved):
        table = resolved.get("data_free")
        if not table:
            return []
        spec = DataFreeSpec(**{k: v for k, v in table.items() if k != "student_schedule"})
        return [cls(spec, Schedule.from_table(table["student_schedule"]))]

    @classmethod
    def scale_epochs(cls, resolved, factor):
        if resolved.get("data_free"):
            scale_schedule_table(resolved["data_free"]["student_schedule"], factor)

    @property
    def kd_temperature(self) -> float:
        return self.spec.kd_temperature

    @property
    def kd_alpha(self) -> float:
        return 1.0  # no data, no labels: soft targets only

    def student_schedule(self, schedule):
        return self.schedule

    def to_dict(self) -> dict:
        return {"name": self.name, "spec": asdict(self.spec), "schedule": self.schedule.to_dict()}

    def prepare(self, teacher, data, seed, schedule):
        # the real splits stay for scoring the student (and picking its best epoch); it trains
        # on the generator's batches alone
        steps = DataFreeSteps(teacher.model, teacher.transform, data.input_shape, self.spec,
                              self.schedule.batch_size, seed, data.val_x.device)
        return Prepared(data, steps=steps)
