"""Defenses by name: `@register_defense` on a `Defense` subclass, `create_defense(name)`,
`list_defenses()`.

A defense declares its knobs (the search space's dimensions, with hard bounds), how its teacher
is made (trained as a phase from scratch against the frozen normal teacher, or the normal
teacher behind a transform of its logits), and what an attacker sees of that teacher. How a knob
set is shown comes from the knobs' symbols (`undistill.space`). Adding a defense is one module
that subclasses `Defense` and registers it; the preset names it in `search.defenses` and gives
its `[search.<name>]` table of ranges.

The built-ins: `nasty` (Ma et al., ICLR 2021), `stingy` (ICLR 2022 PAIR^2Struct) and `ast`
(Adversarial Sparse Teacher, Yilmaz and Keles, 2024).
"""

from __future__ import annotations

# isort: off
from . import nasty  # noqa: E402,F401  (register the built-ins, in the order results list them)
from . import stingy  # noqa: E402,F401
from . import adversarial_sparse  # noqa: E402,F401
# isort: on
from ._base import (
    Defense,
    FrozenLogits,
    NormalTeacher,
    create_defense,
    get_defense,
    list_defenses,
    register_defense,
)

__all__ = ["Defense", "FrozenLogits", "NormalTeacher", "create_defense", "get_defense", "list_defenses",
           "register_defense"]
