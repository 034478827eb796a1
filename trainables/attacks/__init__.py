"""Attacks by name: `@register_attack` on an `Attack` subclass, `create_attack(name, **params)`,
`list_attacks()`, and `attack_suite(table)`: every attack a preset's resolved `[attack]` table asks for.

An attack declares its own keys in that table (and reads them: defaults, checks), the
instances it makes of them (KD makes one per temperature), and how a student is made from a
teacher as the attacker sees it: the student's training data and its loss. Adding an attack is
one module that subclasses `Attack` and registers it.

The built-ins: `kd` (Hinton KD at the attacker's temperatures) and `dafl` (data-free KD in the
style of DAFL, Chen et al., ICCV 2019).
"""

from __future__ import annotations

# isort: off
from . import kd  # noqa: E402,F401  (register the built-ins: KD first, as suites list it)
from . import dafl  # noqa: E402,F401
# isort: on
from ._base import (
                    Attack,
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

__all__ = ["Attack", "TeacherView", "attack_keys", "attack_suite", "create_attack", "get_attack",
           "list_attacks", "register_attack", "resolve_attacks", "scale_attack_epochs"]
