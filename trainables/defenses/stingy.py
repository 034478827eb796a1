"""Stingy Teacher ("Sparse Logits Suffice to Fail Knowledge Distillation", ICLR 2022
PAIR^2Struct; code: HowieMa/stingy-teacher): the normal teacher, unchanged, answers with its k
largest logits only (the rest −inf before the softmax the student sees). No retraining; top-1
survives, so its accuracy is the normal teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass

from undistill.space import Knob

from ..losses import stingy_logits
from ._base import Defense, register_defense


@register_defense
@dataclass(frozen=True)
class Stingy(Defense):
    name = "stingy"
    colour = "tab:blue"
    transforms_logits = True

    def knobs(self, num_classes: int) -> tuple[Knob, ...]:
        return (Knob("k", "k", 1, num_classes - 1, integer=True,
                     why=f": the teacher keeps its k largest of {num_classes} logits, so "
                         f"1 ≤ k < {num_classes}"),)

    def transform(self, logits, knobs):
        return stingy_logits(logits, int(knobs["k"]))
