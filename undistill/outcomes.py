"""Typed outcomes, from `trainables.candidate.run_candidate` to the Parquet row
(`results.rows` is the one place that maps them to the Arrow schema).

NaN and None: an accuracy that does not exist (a student skipped, a teacher that diverged) is
None here and null in Parquet; NaN is never stored. Two boundaries turn None into NaN because
their consumers need floats: Tune's metrics (`orchestrator._trial`) and the rows readers get
back (`results.ResultStore.trial_rows`, so that rows sort and compare).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Where a phase (or a trial's own process) ran, as runners add it to a phase's result.
PLACEMENT_KEYS = ("node_id", "hostname", "gpu_ids", "cpus", "gpus", "placement_group",
                  "started_at", "finished_at", "cached")


def number(x) -> float | None:
    """A float, or None for a missing or non-finite-by-NaN value (±inf stays: a diverged ω)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


@dataclass(frozen=True)
class Candidate:
    """One point of the search: a defense by its registered name and its knobs."""

    defense: str
    knobs: tuple[tuple[str, float], ...] = ()  # sorted (name, value): hashable, stable

    @classmethod
    def of(cls, defense: str, **knobs) -> Candidate:
        return cls(defense, tuple(sorted(knobs.items())))

    @classmethod
    def from_params(cls, params: dict) -> Candidate:
        """From a Tune config or Optuna's params: {"defense": …, <knob>: value, …}."""
        return cls.of(params["defense"], **{k: v for k, v in params.items() if k != "defense"})

    @property
    def values(self) -> dict[str, float]:
        return dict(self.knobs)

    def params(self) -> dict:
        return {"defense": self.defense, **self.values}


@dataclass(frozen=True)
class Placement:
    """Where and when a process ran (Ray's node, its GPUs and placement group), the shares it
    held, and whether its phase came from the artifact store instead."""

    node_id: str | None = None
    hostname: str | None = None
    gpu_ids: tuple[str, ...] | None = None
    cpus: float | None = None
    gpus: float | None = None
    placement_group: str | None = None
    started_at: float | None = None  # epoch seconds
    finished_at: float | None = None
    cached: bool | None = None

    @classmethod
    def from_result(cls, result: dict | None) -> Placement:
        """From a phase's result dict (see `PLACEMENT_KEYS`)."""
        if not result:
            return cls()
        given = {k: result[k] for k in PLACEMENT_KEYS if k in result}
        if "gpu_ids" in given:
            given["gpu_ids"] = tuple(given["gpu_ids"] or ())
        return cls(**given)


@dataclass(frozen=True)
class Baselines:
    """A student × attack's references: the student alone (plain, label-smoothed) and the same
    attack on the normal teacher."""

    scratch_acc: float | None = None
    smoothed_acc: float | None = None
    normal_kd_acc: float | None = None


@dataclass(frozen=True)
class StudentOutcome:
    """One student by one attack on the defended teacher."""

    student_arch: str
    attack: str  # the attack's label: kd-T4, dafl
    kd_temperature: float | None  # the temperature of its soft targets
    kd_alpha: float | None  # their weight against the labels (1: no labels)
    status: str  # ok | diverged | skipped | error
    student_acc: float | None = None  # the clone, test
    baselines: Baselines = field(default_factory=Baselines)
    best_epoch: int = -1
    wall_s: float = 0.0  # batched: its share of the batch's seconds
    ran: Placement = field(default_factory=Placement)
    batched: bool | None = None  # trained in one stack with other attacks (None: never ran)


@dataclass(frozen=True)
class CandidateOutcome:
    """A trial: its candidate, its defended teacher, and every clone of it. A defense is as good
    as its best clone (`student_acc`, over students × attacks)."""

    candidate: Candidate
    status: str  # ok | dominated | diverged | infeasible | error
    teacher_acc: float | None
    normal_teacher_acc: float
    # the best clone; None unless ok or dominated (then a lower bound: attacks were skipped)
    student_acc: float | None = None
    best_student: str | None = None
    best_attack: str | None = None
    teacher_wall_s: float = 0.0
    teacher_cached: bool = False  # an earlier attempt trained the defended teacher
    compute_s: float = 0.0  # seconds of the trial's phases summed (students run side by side)
    students: tuple[StudentOutcome, ...] = ()
    ran: Placement = field(default_factory=Placement)  # the trial's own process (Tune's shell sets it)

    @property
    def clone_lower_bound(self) -> bool:
        """`student_acc` is the best of the attacks that ran, skipped ones could only raise it."""
        return self.status == "dominated"

    @property
    def teacher_drop(self) -> float | None:
        return None if self.teacher_acc is None else self.normal_teacher_acc - self.teacher_acc

    @property
    def best(self) -> StudentOutcome | None:
        """The student row of the best clone."""
        return next((s for s in self.students if s.student_arch == self.best_student
                     and s.attack == self.best_attack), None)


@dataclass(frozen=True)
class SweepColumns:
    """What every row of a sweep shares, and each student × attack with its baselines (a failed
    trial still gets its student rows, status `error`)."""

    dataset: str
    teacher_arch: str
    seed: int
    preset: str
    config_fingerprint: str
    versions: dict[str, str | None]
    normal_teacher_acc: float
    students: tuple[StudentOutcome, ...] = ()
    protocol: str = "validation"  # how each phase picked its best epoch (search_spaces.PROTOCOLS)
