"""Data-free KD in the style of DAFL (Chen et al., "Data-Free Learning of Student Networks",
ICCV 2019; code: huawei-noah/Efficient-Computing, Data-Efficient-Model-Compression/DAFL): the
attacker has the teacher and no data. A generator learns inputs the teacher, as the attacker sees
it, classifies confidently; the student is distilled on its samples alone (α = 1: no labels).
The machinery, and where it departs from the published method, is in `trainables.data_free`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from undistill.errors import ConfigError
from undistill.tables import check_keys, check_positive

from ..data_free import DataFreeSpec, data_free_split
from ..losses import kd_loss
from ._base import Attack, register_attack

# DAFL distils at this temperature unless the preset's [attack.data_free] says otherwise
DATA_FREE_TEMPERATURE = 4.0
_KEYS = {"latent_dim": int, "generator_steps": int, "batch_size": int, "lr": float,
         "activation_weight": float, "entropy_weight": float, "samples": int, "kd_temperature": float}


@register_attack
@dataclass(frozen=True)
class DAFL(Attack):
    spec: DataFreeSpec
    temperature: float = DATA_FREE_TEMPERATURE

    name = "dafl"
    preset_keys = {"data_free": dict}
    trains_on_real_data = False  # a generator's samples: its own inputs, trained one by one

    @classmethod
    def resolve(cls, table):
        data_free = table.get("data_free")
        if data_free is None:
            return {}
        check_keys("attack.data_free", data_free, _KEYS)
        for key, least in (("latent_dim", 1), ("generator_steps", 1), ("batch_size", 2)):
            if key in data_free and data_free[key] < least:  # the generator's BatchNorm needs 2
                raise ConfigError(f"attack.data_free.{key} must be ≥ {least}, got {data_free[key]!r}")
        for key in ("lr", "kd_temperature"):
            if key in data_free:
                check_positive(f"attack.data_free.{key}", data_free[key])
        for key in ("activation_weight", "entropy_weight", "samples"):
            if key in data_free:
                check_positive(f"attack.data_free.{key}", data_free[key], allow_zero=True)
        given = {k: float(v) if _KEYS[k] is float else v for k, v in data_free.items()}
        return {"data_free": {**asdict(DataFreeSpec()), "kd_temperature": DATA_FREE_TEMPERATURE, **given}}

    @classmethod
    def from_table(cls, resolved):
        table = resolved.get("data_free")
        if not table:
            return []
        spec = DataFreeSpec(**{k: v for k, v in table.items() if k != "kd_temperature"})
        return [cls(spec, table["kd_temperature"])]

    @classmethod
    def scale_epochs(cls, resolved, factor):
        if resolved.get("data_free"):
            steps = resolved["data_free"]["generator_steps"]
            resolved["data_free"]["generator_steps"] = max(1, round(steps * factor))

    @property
    def kd_temperature(self) -> float:
        return self.temperature

    @property
    def kd_alpha(self) -> float:
        return 1.0  # no data, no labels: soft targets only

    def prepare(self, teacher, data, seed):
        # no data: a generator's samples replace the training split
        data, seen, stats = data_free_split(data, teacher.model, teacher.transform, self.spec, seed)
        temperature = self.temperature

        def loss_fn(m, x, y, idx):
            return kd_loss(m(x), seen[idx], y, alpha=1.0, temperature=temperature)

        return data, loss_fn, {"generator": stats}
