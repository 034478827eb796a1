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

A sweep whose front was replicated (`confirm`) competes with its replicated candidates alone, on
their means over seeds, with 95 % intervals of the points below each baseline (paired by seed,
see `replicates`): the best defense within a budget is on its sweep's front, so nothing better
is left out, and one lucky seed does not win.

Read from the Parquet rows alone: no torch, no Ray.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from .replicates import Estimate, replicated
from .report import reference_point
from .store import SweepRows

BUDGETS = (0.5, 1.0, 2.0)  # points of teacher accuracy a defense may cost
COLUMNS = ("dataset", "protocol", "defense", "budget", "knobs", "seeds", "teacher_acc", "teacher_drop",
           "student_acc", "student_sd", "best_attack", "best_student", "below_normal_kd", "below_normal_kd_low",
           "below_normal_kd_high", "below_smoothed", "below_smoothed_low", "below_smoothed_high", "sweep",
           "trial_id")
# a table shows each interval in its number's cell (see `Standing.cells`)
TABLE_COLUMNS = ("dataset", "protocol", "defense", "budget", "knobs", "seeds", "teacher_acc", "teacher_drop",
                 "student_acc", "best_attack", "best_student", "below_normal_kd", "below_smoothed", "sweep",
                 "trial_id")


@dataclass(frozen=True)
class Standing:
    """The best defense of one family on one dataset within one budget (None where no trial of
    that family stayed within it)."""

    dataset: str
    protocol: str
    defense: str
    budget: float
    knobs: str | None = None  # "omega=0.015, tau_a=4"
    seeds: int | None = None  # seeds its numbers are the means of (1: not replicated)
    teacher_acc: float | None = None
    teacher_drop: float | None = None
    student_acc: float | None = None  # its best clone
    student_sd: float | None = None  # over seeds
    best_attack: str | None = None  # replicated: the attack that made the best clone most often
    best_student: str | None = None
    below_normal_kd: float | None = None  # points below its sweep's best clone of the normal teacher
    below_normal_kd_low: float | None = None  # the 95 % interval of that (replicated)
    below_normal_kd_high: float | None = None
    below_smoothed: float | None = None  # points below its sweep's best label-smoothed student
    below_smoothed_low: float | None = None
    below_smoothed_high: float | None = None
    sweep: str | None = None
    trial_id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def cells(self) -> dict:
        """`to_dict` for a table: the points below each baseline with their interval in one cell."""
        out = self.to_dict()
        for name in ("below_normal_kd", "below_smoothed"):
            low, high = out[f"{name}_low"], out[f"{name}_high"]
            if out[name] is not None and low is not None:
                out[name] = f"{out[name]:.2f} [{low:.2f}, {high:.2f}]"
        return out


def _knobs(knobs: Mapping[str, float] | None) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in sorted((knobs or {}).items()))


def _candidates(sweep: str, rows: SweepRows) -> list[dict]:
    """The sweep's fully judged trials, each with its points below the sweep's baselines; its
    replicated candidates alone, on their means, when it has replicates."""
    if rows.replicate_trials:
        return _replicated(sweep, rows)
    trials, students = rows.trials, list(rows.students)
    normal_best = reference_point(students)[1] if any(s.get("normal_kd_acc") is not None for s in students) else None
    smoothed = [s["smoothed_acc"] for s in students if s.get("smoothed_acc") is not None]
    smoothed_best = max(smoothed) if smoothed else None
    out = []
    for t in trials:
        if t.get("status") != "ok" or t.get("student_acc") is None or t.get("teacher_drop") is None:
            continue
        clone = t["student_acc"]
        out.append({**t, "sweep": sweep, "protocol": t.get("protocol") or "validation", "seeds": 1,
                    "below_normal_kd": None if normal_best is None else round(normal_best - clone, 4),
                    "below_smoothed": None if smoothed_best is None else round(smoothed_best - clone, 4)})
    return out


def _replicated(sweep: str, rows: SweepRows) -> list[dict]:
    own = {t["trial_id"]: t for t in rows.trials}
    out = []
    for c in replicated(rows.trials, rows.students, rows.replicate_trials, rows.replicate_students):
        t = own[c.trial_id]
        normal, smoothed = c.below.get("normal_kd"), c.below.get("smoothed")
        out.append({"sweep": sweep, "trial_id": c.trial_id, "dataset": t["dataset"],
                    "protocol": t.get("protocol") or "validation", "defense": c.defense, "knobs": c.knobs,
                    "seeds": len(c.seeds), "teacher_acc": c.teacher_acc.mean, "teacher_drop": c.teacher_drop.mean,
                    "student_acc": c.student_acc.mean, "student_sd": c.student_acc.sd,
                    "best_attack": Counter(c.best_attacks).most_common(1)[0][0], "best_student": t.get("best_student"),
                    **_interval("below_normal_kd", normal), **_interval("below_smoothed", smoothed)})
    return out


def _interval(name: str, e: Estimate | None) -> dict:
    if e is None:
        return {name: None}
    return {name: round(e.mean, 4), f"{name}_low": e.low, f"{name}_high": e.high}


def leaderboard(sweeps: Mapping[str, SweepRows | tuple], budgets: tuple[float, ...] = BUDGETS) -> list[Standing]:
    """`sweeps`: name -> its `SweepRows` (or the tuple of them). One `Standing` per dataset,
    protocol, defense family (each that some sweep searched and finished a trial of) and budget,
    in that order."""
    pool: list[dict] = []
    for name in sorted(sweeps):
        rows = sweeps[name]
        pool += _candidates(name, rows if isinstance(rows, SweepRows) else SweepRows(*rows))
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
                dataset, protocol, defense, budget, knobs=_knobs(best.get("knobs")), seeds=best["seeds"],
                teacher_acc=best["teacher_acc"], teacher_drop=best["teacher_drop"], student_acc=best["student_acc"],
                student_sd=best.get("student_sd"), best_attack=best.get("best_attack"),
                best_student=best.get("best_student"), below_normal_kd=best["below_normal_kd"],
                below_normal_kd_low=best.get("below_normal_kd_low"),
                below_normal_kd_high=best.get("below_normal_kd_high"), below_smoothed=best["below_smoothed"],
                below_smoothed_low=best.get("below_smoothed_low"), below_smoothed_high=best.get("below_smoothed_high"),
                sweep=best["sweep"], trial_id=best["trial_id"]))
    return board
