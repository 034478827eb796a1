from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import ClassVar

import torch
from torch import nn

from undistill.errors import ConfigError

from ..data import DeviceData
from ..loop import LossFn, Schedule, Steps, batched_logits
from ..registry import Registry

_ATTACKS: Registry[type[Attack]] = Registry("attack")


@dataclass(frozen=True)
class TeacherView:
    """The frozen (defended) teacher as the attacker sees it: its logits through the defense's
    transform (the identity for a defense that trains its teacher)."""

    model: nn.Module
    transform: Callable[[torch.Tensor], torch.Tensor]
    # split -> (the split, kept alive so its id is not reused; its logits)
    _seen: dict = field(default_factory=dict, repr=False, compare=False)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Its float32 logits on a batch of model inputs, no graph."""
        return self.transform(self.model(x).float())

    def on(self, x: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Its logits on a whole stored split, batch by batch (asked once per split: the
        attacks of a batch share one view and one pass)."""
        key = (id(x), id(prepare))
        if key not in self._seen:
            self._seen[key] = (x, self.transform(batched_logits(self.model, x, prepare)))
        return self._seen[key][1]


@dataclass(frozen=True)
class Prepared:
    """What an attack gives its student's phase: the data the student is scored on and, unless
    the attack brings its own `steps`, trains on with `loss_fn`; and facts for the result."""

    data: DeviceData
    loss_fn: LossFn | None = None  # loss_fn(model, x, y, idx) on batches of data's training split
    steps: Steps | None = None  # or: its own epochs (DAFL's generator and student together)
    facts: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Attack:
    """A way to clone a teacher. Subclasses are frozen dataclasses of their own parameters;
    they set `name` and `preset_keys`, and implement `from_table` and `prepare`."""

    name: ClassVar[str] = ""
    # Its keys in a preset's [attack] table, with their TOML types; `required` must all be given.
    preset_keys: ClassVar[dict[str, type]] = {}
    required_keys: ClassVar[tuple[str, ...]] = ()
    # Its `prepare` returns the real training split it was given and a loss (it only changes
    # the loss): then all its temperatures, and the other such attacks on one student
    # architecture, can train as one vectorised model (`phases.run_attack_batch`). False: it
    # brings its own steps (DAFL's generator) and trains one by one.
    trains_on_real_data: ClassVar[bool] = True
    # Its own steps do not depend on the student (DAFL's generator learns from the teacher
    # alone): its phases on several student architectures can train as one group on one
    # stream of them (`phases.run_attack_batch`), the stream made once instead of per student.
    students_share_steps: ClassVar[bool] = False
    # Its student is built with intermediate exits (`trainables.exits`) and its loss reads them;
    # a sweep gives it only the students whose model has exits, and it trains alone.
    needs_exits: ClassVar[bool] = False

    @classmethod
    def resolve(cls, table: dict) -> dict:
        """Its keys of the preset's `[attack]` table (only those), checked, with defaults
        filled: what the sweep's identity holds. {} when the preset does not ask for it."""
        return {}

    @classmethod
    def from_table(cls, resolved: dict) -> list[Attack]:
        """Its instances for a resolved `[attack]` table (none when absent)."""
        return []

    @classmethod
    def scale_epochs(cls, resolved: dict, factor: float) -> None:
        """`--epochs-scale`: scale, in place, whatever in its resolved keys counts training."""

    @property
    def label(self) -> str:
        """Its name in results (`kd-T4`): unique within a suite; `label.split("-")[0]` is its
        family, which `pareto --attack` also accepts."""
        return self.name

    @property
    def kd_temperature(self) -> float | None:
        """The temperature of the soft targets it distils on (a results column)."""
        return None

    @property
    def kd_alpha(self) -> float | None:
        """The weight of those targets against the labels (1: no labels; a results column)."""
        return None

    def student_schedule(self, schedule: Schedule) -> Schedule:
        """The schedule its student trains by, given the student's own: that one, unless the
        attack brings its own (DAFL's, whose epochs are its generator's)."""
        return schedule

    def prepare(self, teacher: TeacherView, data: DeviceData, seed: int, schedule: Schedule) -> Prepared:
        """What the student trains on (see `Prepared`), from the teacher as the attacker sees it;
        `schedule` is the one the student trains by (its batch size, its epochs)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """Its name and parameters: part of its phases' content keys."""
        out = {"name": self.name}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = asdict(value) if is_dataclass(value) else value
        return out


def register_attack(cls: type[Attack]) -> type[Attack]:
    _ATTACKS.register(cls.name, cls)
    return cls


def unregister_attack(name: str) -> None:
    _ATTACKS.unregister(name)


def get_attack(name: str) -> type[Attack]:
    return _ATTACKS.get(name)


def create_attack(name: str, **params) -> Attack:
    try:
        return _ATTACKS.get(name)(**params)
    except TypeError as exc:
        raise ConfigError(f"attack {name!r}: {exc}") from None


def list_attacks() -> list[str]:
    return _ATTACKS.names()


def attack_keys() -> tuple[dict[str, type], tuple[str, ...]]:
    """Every registered attack's keys of the `[attack]` table, and the required ones."""
    keys: dict[str, type] = {}
    required: list[str] = []
    for name in _ATTACKS.names():
        cls = _ATTACKS.get(name)
        keys.update(cls.preset_keys)
        required += [k for k in cls.required_keys if k not in required]
    return keys, tuple(required)


def resolve_attacks(table: dict) -> dict:
    """The `[attack]` table's attack keys, each attack's part resolved by that attack."""
    out: dict = {}
    for name in _ATTACKS.names():
        cls = _ATTACKS.get(name)
        out.update(cls.resolve({k: v for k, v in table.items() if k in cls.preset_keys}))
    return out


def attack_suite(resolved: dict) -> list[Attack]:
    """Every attack a resolved `[attack]` table asks for, in registration order."""
    suite: list[Attack] = []
    for name in _ATTACKS.names():
        suite += _ATTACKS.get(name).from_table(resolved)
    labels = [a.label for a in suite]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"attack: two attacks of the suite share a name: {labels}")
    return suite


def scale_attack_epochs(resolved: dict, factor: float) -> None:
    for name in _ATTACKS.names():
        _ATTACKS.get(name).scale_epochs(resolved, factor)
