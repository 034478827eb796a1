"""A sweep's best clones arranged for its report: by defense and attack, by defense and student,
and the baselines each student has without a defense (alone, label-smoothed, distilled from the
normal teacher by each attack).

Pure Python on the Parquet rows of the sweep's own seed (not `confirm`'s replicates): no torch,
no Ray. `None` stands for the normal teacher wherever a trial id goes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from undistill.space import SearchSpace

from .pareto import _finite


@dataclass(frozen=True)
class Clones:
    attacks: list[str]  # in the order the rows first name them
    students: list[str]  # student_arch, in the order the rows first name them
    # (trial id | None, attack) -> the best clone over the students
    by_attack: dict[tuple[str | None, str], float] = field(default_factory=dict)
    # (trial id | None, student) -> (its best clone over the attacks, the attack that made it)
    by_student: dict[tuple[str | None, str], tuple[float, str]] = field(default_factory=dict)
    alone: dict[str, float] = field(default_factory=dict)  # student -> scratch accuracy
    smoothed: dict[str, float] = field(default_factory=dict)  # student -> label-smoothed accuracy
    normal_kd: dict[tuple[str, str], float] = field(default_factory=dict)  # (student, attack) -> clone

    def normal_best(self) -> tuple[float, str | None, str | None]:
        """The normal teacher's best clone: (accuracy, attack, student); nan when none ran."""
        held = [(acc, attack, student) for (student, attack), acc in self.normal_kd.items()]
        return max(held, key=lambda h: h[0]) if held else (math.nan, None, None)

    def best_baseline(self, which: str) -> tuple[float, str | None]:
        """The best student `alone` or `smoothed`: (accuracy, student); nan when none."""
        held = [(acc, s) for s, acc in getattr(self, which).items()]
        return max(held, key=lambda h: h[0]) if held else (math.nan, None)


def clones(students: Iterable[dict]) -> Clones:
    """The tables of `Clones` from a sweep's student rows (`ResultStore.student_rows`): a
    trial's clone counts where its row finished (`ok`); the baselines are the rows' own
    columns (the same for every trial of a seed)."""
    rows = list(students)
    out = Clones(attacks=list(dict.fromkeys(s["attack"] for s in rows if s.get("attack"))),
                 students=list(dict.fromkeys(s["student_arch"] for s in rows if s.get("student_arch"))))
    for s in rows:
        student, attack = s.get("student_arch"), s.get("attack")
        if not student:
            continue
        _keep_max(out.alone, student, s.get("scratch_acc"))
        _keep_max(out.smoothed, student, s.get("smoothed_acc"))
        if not attack:
            continue
        if _finite(s.get("normal_kd_acc")):
            _keep_max(out.normal_kd, (student, attack), s["normal_kd_acc"])
            _keep_max(out.by_attack, (None, attack), s["normal_kd_acc"])
            _keep_best(out.by_student, (None, student), s["normal_kd_acc"], attack)
        if s.get("status") == "ok" and _finite(s.get("student_acc")):
            _keep_max(out.by_attack, (s["trial_id"], attack), s["student_acc"])
            _keep_best(out.by_student, (s["trial_id"], student), s["student_acc"], attack)
    return out


def _keep_max(table: dict, key, value) -> None:
    if _finite(value) and value > table.get(key, -math.inf):
        table[key] = value


def _keep_best(table: dict, key, value: float, attack: str) -> None:
    if key not in table or value > table[key][0]:
        table[key] = (value, attack)


def short_names(students: Sequence[str]) -> dict[str, str]:
    """Each student_arch as a report shows it: `cnn1d(width=16)` as `cnn1d`, unless two students
    share that name (then in full)."""
    stem = {s: s.split("(", 1)[0] for s in students}
    counts: dict[str, int] = {}
    for s in dict.fromkeys(students):
        counts[stem[s]] = counts.get(stem[s], 0) + 1
    return {s: stem[s] if counts[stem[s]] == 1 else s for s in students}


def defense_label(trial: dict, space: SearchSpace, sep: str = " ", eq: str = "=") -> str:
    """`nasty ω=0.015 τ_A=4`: the defense and its knobs as the sweep's space shows them."""
    knobs = space.describe(trial["defense"], trial.get("knobs") or {}, sep=sep, eq=eq)
    return f"{trial['defense']} {knobs}".strip()


def protects_nothing(trial: dict, normal_best: float) -> bool:
    """A front defense whose best clone is no lower than the normal teacher's best clone: it is
    on the front for its teacher's accuracy alone."""
    return _finite(trial.get("student_acc")) and _finite(normal_best) and trial["student_acc"] >= normal_best
