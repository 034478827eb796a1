"""The Pareto front of (teacher accuracy ↑, best clone accuracy ↓) and its hypervolume.

Two objectives need no library: the front is a sort and a scan, the hypervolume a sum of strips.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from undistill.space import SearchSpace


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(teacher_acc, student_acc) `a` is at least as good as `b` on both and better on one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def front_indices(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, by teacher accuracy descending (ties kept)."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], points[i][1]))
    kept: list[int] = []
    best_student = math.inf  # lowest clone accuracy among points with higher teacher accuracy
    for i in order:
        t, s = points[i]
        if s < best_student or (kept and points[kept[-1]] == (t, s)):
            kept.append(i)
            best_student = min(best_student, s)
    # A later point with the same teacher accuracy and lower clone accuracy dominates earlier
    # ones with that teacher accuracy; the sort puts the lowest clone first, so none slip in.
    return kept


def pareto_front(rows: Iterable[dict], max_teacher_drop: float | None = None) -> list[dict]:
    """The front among finished (`status == "ok"`) trials, optionally only those whose teacher
    lost at most `max_teacher_drop` points. A `dominated` trial is beaten by one of them by
    construction (`trainables.pruning`), so it is never on the front."""
    eligible = [
        r for r in rows
        if r["status"] == "ok"
        and _finite(r["teacher_acc"]) and _finite(r["student_acc"])
        and (max_teacher_drop is None or r["teacher_drop"] <= max_teacher_drop)
    ]
    points = [(r["teacher_acc"], r["student_acc"]) for r in eligible]
    return [eligible[i] for i in front_indices(points)]


def hypervolume(points: Iterable[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by `points` and bounded by `reference` = (worst teacher acc, worst clone
    acc); points not strictly better than the reference on both axes add nothing."""
    t_ref, s_ref = reference
    inside = [(t, s) for t, s in points if t > t_ref and s < s_ref]
    front = [inside[i] for i in front_indices(inside)]
    area, s_prev = 0.0, s_ref
    for t, s in front:  # teacher accuracy descending, so clone accuracy descending too
        if s < s_prev:
            area += (t - t_ref) * (s_prev - s)
            s_prev = s
    return area


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def is_attack(name: str | None, attack: str) -> bool:
    """`name` (a student row's attack) is `attack`, or belongs to the family `attack` (`kd`)."""
    return bool(name) and (name == attack or name.startswith(attack + "-"))


def attack_names(student_rows: Iterable[dict]) -> list[str]:
    """The attacks a sweep ran, and their families (`kd` for every `kd-T…`)."""
    names = {r["attack"] for r in student_rows if r.get("attack")}
    return sorted(names | {n.split("-", 1)[0] for n in names})


def by_attack(trial_rows: Iterable[dict], student_rows: Iterable[dict], attack: str) -> list[dict]:
    """Trial rows as if `attack` (a name, or a family such as `kd`) were the only attack: each
    trial's best clone, and which student made it, over that attack's student rows alone.

    A trial whose attacks were cut short once it was beaten (`dominated`) is judged like a
    finished one when every one of `attack`'s rows ran; otherwise it lacks the attack (see
    `lacking_attack`) and has no clone accuracy here."""
    student_rows = list(student_rows)
    best: dict[str, dict] = {}
    for s in student_rows:
        if is_attack(s.get("attack"), attack) and s["status"] == "ok" and _finite(s["student_acc"]):
            held = best.get(s["trial_id"])
            if held is None or s["student_acc"] > held["student_acc"]:
                best[s["trial_id"]] = s
    lacking = set(lacking_attack(trial_rows, student_rows, attack))
    out = []
    for t in trial_rows:
        b = best.get(t["trial_id"], {})
        judged = t["status"] == "ok" or (t["status"] == "dominated" and t["trial_id"] not in lacking)
        out.append({**t, "status": "ok" if judged else t["status"],
                    "student_acc": b.get("student_acc", math.nan) if judged else math.nan,
                    "best_student": b.get("student_arch"), "best_attack": b.get("attack"),
                    "kd_temperature": b.get("kd_temperature"), "kd_alpha": b.get("kd_alpha")})
    return out


def lacking_attack(trial_rows: Iterable[dict], student_rows: Iterable[dict], attack: str) -> list[str]:
    """The trials (ids) that skipped some of `attack`'s rows because they were already beaten:
    a front judged by `attack` alone cannot place them."""
    trials = {t["trial_id"] for t in trial_rows if t["status"] == "dominated"}
    return sorted({s["trial_id"] for s in student_rows if s["trial_id"] in trials
                   and is_attack(s.get("attack"), attack) and s["status"] == "skipped"})


def range_edges(front: list[dict], space: SearchSpace, focus_teacher_drop: float | None = None) -> str | None:
    """Where the front runs into the end of a searched range, one sentence saying so, since the
    front may go on past it (BENCHMARKS.md, "Choosing the sampler", found this on the mnist1d
    preset); None when it does not. `space`: the range the sweep searched (its record's, widened
    where the search went past the preset's). Continuous knobs only (`KnobRange.end_of`): an
    integer knob's range is its whole (stingy's 1 ≤ k < classes) unless a preset narrows it.
    `focus_teacher_drop` (the record's): a front defense whose teacher lost more is not counted;
    past it teachers only collapse further, so widening there is no advice."""
    found, widen = [], []
    for defense in space:
        mine = [r for r in front if r["defense"] == defense.defense
                and (focus_teacher_drop is None or not _finite(r.get("teacher_drop"))
                     or r["teacher_drop"] <= focus_teacher_drop)]
        for r in defense.ranges:
            ends = [r.end_of(row["knobs"][r.name]) for row in mine
                    if _finite((row.get("knobs") or {}).get(r.name))]
            for end, value in (("top", r.high), ("bottom", r.low)):
                count = ends.count(end)
                if count:
                    found.append(f"{r.knob.symbol} at the {end} of its range ({value:g}) for {count}")
                    widen += [f"search.{defense.defense}"] if f"search.{defense.defense}" not in widen else []
    if not found:
        return None
    return (f"The front reaches the end of a search range: {'; '.join(found)} of its {len(front)} "
            f"defenses. It may go on past them: widen {' and '.join(widen)} there and sweep again.")
