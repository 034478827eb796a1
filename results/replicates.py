"""How sure a front is: a candidate measured under several seeds (its own trial and the
replicates `confirm` ran), as mean ± sd and a 95 % interval of the mean, and the front on the
means.

Each seed of a candidate has its own normal teacher, students and baselines (`confirm` re-runs
the upstream phases under that seed too), so a comparison with a baseline is paired by seed: the
points a candidate's best clone lies below the baseline are taken seed by seed, and the
candidate is said to push clones below it only where the interval of those differences lies
wholly above zero. Intervals are Student's t over the seeds (n − 1 degrees of freedom): wide with
three seeds, as they should be.

Pure Python on the Parquet rows: no torch, no Ray.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .pareto import _finite, front_indices, is_attack

# Student's t, two-sided 95 % (the 0.975 quantile), by degrees of freedom
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
         2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
         2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
         2.048407, 2.045230, 2.042272)
_Z975 = 1.959964

# baseline -> the student-row column it is read from (the best over the seed's students)
BASELINES = {"normal_kd": "normal_kd_acc", "alone": "scratch_acc", "smoothed": "smoothed_acc"}
BASELINE_WORDS = {"normal_kd": "normal KD", "alone": "the student alone", "smoothed": "label smoothing"}


def t_quantile(df: int) -> float:
    """Student's t 0.975 quantile: from the table to 30 degrees of freedom, past it the
    Cornish-Fisher expansion (within 1e-4 of the exact value there)."""
    if df < 1:
        raise ValueError("a t interval needs at least two values")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class Estimate:
    """A quantity measured once per seed: the mean, the sample standard deviation, and the 95 %
    interval of the mean (sd, low and high are None with a single value)."""

    mean: float
    n: int
    sd: float | None = None
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, values: Iterable[float]) -> Estimate | None:
        values = [v for v in values if _finite(v)]
        if not values:
            return None
        mean = statistics.fmean(values)
        if len(values) == 1:
            return cls(mean, 1)
        sd = statistics.stdev(values)
        half = t_quantile(len(values) - 1) * sd / math.sqrt(len(values))
        return cls(mean, len(values), sd, mean - half, mean + half)

    @property
    def above_zero(self) -> bool:
        """The interval lies wholly above zero (False with one value: nothing to say it)."""
        return self.low is not None and self.low > 0

    def text(self) -> str:
        """`96.35 ± 0.21 [95.83, 96.87]`: mean ± sd [95 % interval]; one value as it is."""
        if self.sd is None:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} ± {self.sd:.2f} [{self.low:.2f}, {self.high:.2f}]"


@dataclass(frozen=True)
class Replicated:
    """One candidate over its seeds: the sweep's own trial and its replicates that finished."""

    trial_id: str  # the sweep's own trial
    defense: str
    knobs: dict[str, float]
    seeds: tuple[int, ...]
    teacher_acc: Estimate
    teacher_drop: Estimate
    student_acc: Estimate  # the best clone, per seed
    # baseline (see BASELINES) -> its best student minus this candidate's best clone, per seed
    below: dict[str, Estimate] = field(default_factory=dict)
    best_attacks: tuple[str, ...] = ()  # the attack that made each seed's best clone

    @property
    def pushes_below(self) -> tuple[str, ...]:
        """The baselines its clones lie below for sure: the paired interval is above zero."""
        return tuple(name for name, e in self.below.items() if e.above_zero)

    def to_row(self) -> dict:
        """Flat: what `pareto --format json|csv` prints (knobs as `knobs`, see `with_knob_columns`)."""
        row = {"trial_id": self.trial_id, "defense": self.defense, "knobs": self.knobs,
               "seeds": len(self.seeds), "seed_list": " ".join(str(s) for s in self.seeds)}
        for name, e in (("teacher_acc", self.teacher_acc), ("student_acc", self.student_acc),
                        ("teacher_drop", self.teacher_drop),
                        *((f"below_{b}", self.below.get(b)) for b in BASELINES)):
            row.update(_flat(name, e))
        row["pushes_below"] = ", ".join(self.pushes_below)
        row["best_attacks"] = ", ".join(self.best_attacks)
        return row


def _flat(name: str, e: Estimate | None) -> dict:
    if e is None:
        return {name: None, f"{name}_sd": None, f"{name}_low": None, f"{name}_high": None}
    return {name: e.mean, f"{name}_sd": e.sd, f"{name}_low": e.low, f"{name}_high": e.high}


def replicated(trials: Sequence[dict], students: Sequence[dict], replicate_trials: Sequence[dict],
               replicate_students: Sequence[dict], attack: str | None = None) -> list[Replicated]:
    """Every candidate of the sweep that has replicates, over its seeds (in the sweep's trial
    order). `attack` (a name or a family, as `pareto --attack`): each seed's clone is the best of
    that attack alone. A seed counts where its trial finished (`ok`) and has a clone."""
    by_trial: dict[str, list[dict]] = {}
    for s in (*students, *replicate_students):
        by_trial.setdefault(s["trial_id"], []).append(s)
    copies: dict[str, list[dict]] = {}
    for r in replicate_trials:
        copies.setdefault(r["replicate_of"], []).append(r)
    out = []
    for t in trials:
        if t["trial_id"] not in copies:
            continue
        measured = []  # (seed, teacher acc, teacher drop, clone row, that seed's student rows)
        for row in (t, *sorted(copies[t["trial_id"]], key=lambda r: r["seed"])):
            rows = by_trial.get(row["trial_id"], [])
            clone = _best_clone(rows, attack)
            if row["status"] == "ok" and clone is not None and _finite(row["teacher_acc"]):
                measured.append((row["seed"], row["teacher_acc"], row["teacher_drop"], clone, rows))
        if not measured:
            continue
        below = {}
        for name, column in BASELINES.items():
            diffs = []
            for *_, clone, rows in measured:
                base = [s[column] for s in rows if _finite(s.get(column))
                        and (attack is None or column != "normal_kd_acc" or is_attack(s.get("attack"), attack))]
                if base:
                    diffs.append(max(base) - clone["student_acc"])
            if len(diffs) == len(measured):  # every seed has the baseline: paired
                below[name] = Estimate.of(diffs)
        out.append(Replicated(
            trial_id=t["trial_id"], defense=t["defense"], knobs=dict(t.get("knobs") or {}),
            seeds=tuple(m[0] for m in measured),
            teacher_acc=Estimate.of(m[1] for m in measured),
            teacher_drop=Estimate.of(m[2] for m in measured),
            student_acc=Estimate.of(m[3]["student_acc"] for m in measured),
            below={k: v for k, v in below.items() if v is not None},
            best_attacks=tuple(m[3]["attack"] for m in measured)))
    return out


def _best_clone(rows: list[dict], attack: str | None) -> dict | None:
    done = [s for s in rows if s["status"] == "ok" and _finite(s.get("student_acc"))
            and (attack is None or is_attack(s.get("attack"), attack))]
    return max(done, key=lambda s: s["student_acc"]) if done else None


def mean_front(candidates: Sequence[Replicated], max_teacher_drop: float | None = None) -> list[Replicated]:
    """The Pareto front of the candidates' means (teacher accuracy ↑, best clone ↓), by teacher
    accuracy descending; `max_teacher_drop` on the mean drop."""
    kept = [c for c in candidates if max_teacher_drop is None or c.teacher_drop.mean <= max_teacher_drop]
    points = [(c.teacher_acc.mean, c.student_acc.mean) for c in kept]
    return [kept[i] for i in front_indices(points)]
