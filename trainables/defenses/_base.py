from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from undistill.space import Knob

from ..loop import LossFn
from ..registry import Registry

# The frozen normal teacher's float32 logits on a training batch (x, its row numbers idx):
# looked up when they were computed once for the whole split, else run on the batch.
FrozenLogits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_DEFENSES: Registry[type[Defense]] = Registry("defense")


@dataclass(frozen=True)
class NormalTeacher:
    """The frozen normal teacher as a defense's loss meets it: called on a training batch (x,
    idx), its logits (`FrozenLogits`); `model` and `data` for a defense that needs more than its
    answers (Adversarial Sparse Teacher attacks it by its gradients on the training split)."""

    logits: FrozenLogits
    model: torch.nn.Module
    data: object  # trainables.data.DeviceData

    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.logits(x, idx)


@dataclass(frozen=True)
class Defense:
    """A defense of a teacher against cloning by distillation. Subclasses set `name` and
    implement `knobs`, and either `teacher_loss` (`trains_teacher = True`) or `transform`
    (`transforms_logits = True`), or both. Instances hold no state: the knobs travel apart."""

    name: ClassVar[str] = ""
    colour: ClassVar[str] = "tab:gray"  # its colour in plots
    trains_teacher: ClassVar[bool] = False  # its teacher is trained from scratch, as a phase
    transforms_logits: ClassVar[bool] = False  # the attacker sees the teacher through `transform`

    def knobs(self, num_classes: int) -> tuple[Knob, ...]:
        """The knobs, in the order they are suggested and shown, with their hard bounds."""
        raise NotImplementedError

    def teacher_loss(self, knobs: dict[str, float], normal: NormalTeacher) -> LossFn:
        """`trains_teacher`: the loss of the defended teacher, trained from scratch with the
        normal teacher's schedule and architecture; `normal(x, idx)` gives the frozen normal
        teacher's logits on each batch."""
        raise NotImplementedError

    def transform(self, logits: torch.Tensor, knobs: dict[str, float]) -> torch.Tensor:
        """What an attacker sees of the teacher's (N, classes) logits."""
        return logits


def register_defense(cls: type[Defense]) -> type[Defense]:
    if not (cls.trains_teacher or cls.transforms_logits):
        raise ValueError(f"defense {cls.name!r} neither trains its teacher nor transforms its logits")
    _DEFENSES.register(cls.name, cls)
    return cls


def unregister_defense(name: str) -> None:
    _DEFENSES.unregister(name)


def get_defense(name: str) -> type[Defense]:
    return _DEFENSES.get(name)


def create_defense(name: str) -> Defense:
    return _DEFENSES.get(name)()


def list_defenses() -> list[str]:
    return _DEFENSES.names()
