"""The leaderboard across sweeps: for each dataset (under each protocol) and defense family, the
defense that hurts clones most within a teacher-cost budget.

A defense is judged against its own sweep's baselines, so that sweeps of other teachers and
students of one dataset compare: `below_normal_kd` is how many points its best clone lies below
the best clone of that sweep's normal teacher (the hypervolume's reference), `below_smoothed`
below the best student that sweep trained alone with label smoothing (what an attacker with the
data gets without any teacher). Within each budget of teacher cost (normal − defended teacher
accuracy, in points) the best defense is the one with the largest `below_normal_kd`; ties go to
the cheaper teacher. Only trials judged by every attack they were meant to meet count (`ok`): a
`dominated` trial's best clone is a lower bound.

Read from the Parquet rows alone: no torch, no Ray.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from .report import reference_point

BUDGETS = (0.5, 1.0, 2.0)  # points of teacher accuracy a defense may cost
COLUMNS = ("dataset", "protocol", "defense", "budget", "knobs", "teacher_acc", "teacher_drop", "student_acc",
           "best_attack", "best_student", "below_normal_kd", "below_smoothed", "sweep", "trial_id")


@dataclass(frozen=True)
class Standing:
    """The best defense of one family on one dataset within one budget (None where no trial of
    that family stayed within it)."""

    dataset: str
    protocol: str
    defense: str
    budget: float
    knobs: str | None = None  # "omega=0.015, tau_a=4"
    teacher_acc: float | None = None
    teacher_drop: float | None = None
    student_acc: float | None = None  # its best clone
    best_attack: str | None = None
    best_student: str | None = None
    below_normal_kd: float | None = None  # points below its sweep's best clone of the normal teacher
    below_smoothed: float | None = None  # points below its sweep's best label-smoothed student
    sweep: str | None = None
    trial_id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _knobs(knobs: Mapping[str, float] | None) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in sorted((knobs or {}).items()))


def _candidates(sweep: str, trials: Iterable[dict], students: list[dict]) -> list[dict]:
    """The sweep's fully judged trials, each with its points below the sweep's baselines."""
    normal_best = reference_point(students)[1] if any(s.get("normal_kd_acc") is not None for s in students) else None
    smoothed = [s["smoothed_acc"] for s in students if s.get("smoothed_acc") is not None]
    smoothed_best = max(smoothed) if smoothed else None
    out = []
    for t in trials:
        if t.get("status") != "ok" or t.get("student_acc") is None or t.get("teacher_drop") is None:
            continue
        clone = t["student_acc"]
        out.append({**t, "sweep": sweep, "protocol": t.get("protocol") or "validation",
                    "below_normal_kd": None if normal_best is None else round(normal_best - clone, 4),
                    "below_smoothed": None if smoothed_best is None else round(smoothed_best - clone, 4)})
    return out


def leaderboard(sweeps: Mapping[str, tuple[list[dict], list[dict]]],
                budgets: tuple[float, ...] = BUDGETS) -> list[Standing]:
    """`sweeps`: name -> (its trial rows, its student rows). One `Standing` per dataset,
    protocol, defense family (each that some sweep searched and finished a trial of) and budget,
    in that order."""
    pool: list[dict] = []
    for name in sorted(sweeps):
        trials, students = sweeps[name]
        pool += _candidates(name, trials, students)
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for c in pool:
        groups.setdefault((c["dataset"], c["protocol"], c["defense"]), []).append(c)
    board = []
    for (dataset, protocol, defense), members in sorted(groups.items()):
        for budget in budgets:
            within = [c for c in members if c["teacher_drop"] <= budget and c["below_normal_kd"] is not None]
            if not within:
                board.append(Standing(dataset, protocol, defense, budget))
                continue
            best = min(within, key=lambda c: (-c["below_normal_kd"], c["teacher_drop"], c["sweep"], c["trial_id"]))
            board.append(Standing(
                dataset, protocol, defense, budget, knobs=_knobs(best.get("knobs")),
                teacher_acc=best["teacher_acc"], teacher_drop=best["teacher_drop"], student_acc=best["student_acc"],
                best_attack=best.get("best_attack"), best_student=best.get("best_student"),
                below_normal_kd=best["below_normal_kd"], below_smoothed=best["below_smoothed"],
                sweep=best["sweep"], trial_id=best["trial_id"]))
    return board
