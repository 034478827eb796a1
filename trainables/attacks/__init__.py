"""Attacks by name: `@register_attack` on an `Attack` subclass, `create_attack(name, **params)`,
`list_attacks()`, and `attack_suite(table)`: every attack a preset's resolved `[attack]` table asks for.

An attack declares its own keys in that table (and reads them: defaults, checks), the
instances it makes of them (KD makes one per temperature), and how a student is made from a
teacher as the attacker sees it (`Prepared`: the student's data and its loss, or its own
training steps). Adding an attack is
one module that subclasses `Attack` and registers it.

The built-ins: `kd` (Hinton KD at the attacker's temperatures), `unlabelled` (the same KD with no
labels, α = 1: an attacker who only queries the teacher), `dafl` (data-free KD as DAFL, Chen
et al., ICCV 2019, publishes it) and `skeptical` (the skeptical student of Kundu et al., NeurIPS
2021: the teacher taught at a shallow exit of a self-distilling student).
"""

from __future__ import annotations

# isort: off
from . import kd  # noqa: E402,F401  (register the built-ins: KD first, as suites list it)
from . import unlabelled  # noqa: E402,F401
from . import dafl  # noqa: E402,F401
from . import skeptical  # noqa: E402,F401
# isort: on
from ._base import (
                    Attack,
                    Prepared,
                    TeacherView,
                    attack_keys,
                    attack_suite,
                    create_attack,
                    get_attack,
                    list_attacks,
                    register_attack,
                    resolve_attacks,
                    scale_attack_epochs,
)

__all__ = ["Attack", "Prepared", "TeacherView", "attack_keys", "attack_suite", "create_attack", "get_attack",
           "list_attacks", "register_attack", "resolve_attacks", "scale_attack_epochs"]
