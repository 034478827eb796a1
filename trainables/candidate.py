"""One defense candidate, start to finish: build the defended teacher, gate it, attack it with
every attack on every student, and summarise: a defense is as good as its best clone. What runs
each phase, and where, is the caller's: `run_candidate` hands lists of `PhaseJob`s to runners
(the Tune shell runs the teacher in the trial's process and the students as parallel child
tasks; tests run them in-process).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

from .phases import PhaseConfig, PhaseJob

# A runner takes independent phases and returns their results in the same order. A finished
# phase (found by its key) is returned, not trained again: this is how a retried trial resumes.
RunPhases = Callable[[list[PhaseJob]], list[dict]]


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its knobs; built once by the orchestrator."""

    normal_teacher_key: str  # the normal teacher's phase key (its weights are found by it)
    normal_teacher_acc: float  # percent, test
    nasty_template: PhaseConfig | None  # phase "nasty" with omega/tau_a still unset
    # phase "kd" or "dafl", one per student × attack, seeing the teacher as it is
    attack_templates: tuple[PhaseConfig, ...]
    # attack name (see `attack_name`) -> {"scratch_acc", "smoothed_acc", "normal_kd_acc"}: each
    # row's baselines, the student alone (plain, label-smoothed) and the attack on the normal teacher
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    max_teacher_drop: float | None = None  # points; a nasty teacher losing more is not distilled


def candidate_jobs(params: dict, ctx: TrialContext) -> tuple[PhaseJob | None, list[PhaseJob]]:
    """The candidate's phases: its teacher (None when the defense trains none) and its students."""
    defense = params["defense"]
    if defense == "nasty":
        nasty = replace(ctx.nasty_template, omega=float(params["omega"]), tau_a=float(params["tau_a"]))
        teacher = PhaseJob("nasty", nasty, nasty.key(ctx.normal_teacher_key), ctx.normal_teacher_key)
        teacher_key, transform, k = teacher.key, "identity", None
    elif defense == "stingy":
        teacher, teacher_key, transform, k = None, ctx.normal_teacher_key, "stingy", int(params["k"])
    else:
        raise ValueError(f"unknown defense {defense!r}")
    students = []
    for template in ctx.attack_templates:
        cfg = replace(template, transform=transform, k=k)
        students.append(PhaseJob(attack_name(cfg), cfg, cfg.key(teacher_key), teacher_key))
    return teacher, students


def attack_name(cfg: PhaseConfig) -> str:
    """One attack on one student: `kd-T4 mlp`, `dafl cnn1d(width=16)`."""
    return f"{cfg.attack} {cfg.model.label}"


def run_candidate(params: dict, ctx: TrialContext, run_teacher: RunPhases,
                  run_students: RunPhases) -> dict:
    """Evaluate one candidate: {"defense": "nasty", "omega", "tau_a"} or {"defense": "stingy", "k"}.

    Returns the trial summary with `status` (ok | diverged | infeasible), `teacher_acc`,
    `student_acc` = the best clone (the highest accuracy over the students), and the phases'
    results under `teacher` and `students`.
    """
    teacher_job, student_jobs = candidate_jobs(params, ctx)

    # 1. the defended teacher (the stingy one is the normal teacher behind a top-k filter)
    teacher = run_teacher([teacher_job])[0] if teacher_job else None
    if teacher is not None and teacher["status"] != "ok":
        return _summary(ctx, teacher, {}, "diverged", math.nan)
    teacher_acc = teacher["test_acc"] if teacher else ctx.normal_teacher_acc

    # 2. the gate: a teacher that already lost too much is not worth its students
    if ctx.max_teacher_drop is not None and ctx.normal_teacher_acc - teacher_acc > ctx.max_teacher_drop:
        return _summary(ctx, teacher, {}, "infeasible", teacher_acc)

    # 3. the attacks: every student, by every attack, from the defended teacher
    results = dict(zip((j.name for j in student_jobs), run_students(student_jobs), strict=True))
    if teacher is None:  # what the attacker's teacher scores through the filter (top-1 survives)
        seen = [r["teacher_acc_seen"] for r in results.values() if "teacher_acc_seen" in r]
        teacher_acc = seen[0] if seen else teacher_acc
    ok = any(r["status"] == "ok" for r in results.values())
    return _summary(ctx, teacher, results, "ok" if ok else "diverged", teacher_acc)


# Each student row's references: the student alone (plain and label-smoothed), the same attack
# on the normal teacher.
BASELINES = ("scratch_acc", "smoothed_acc", "normal_kd_acc")
# What a runner may add to a phase's result about where and when it ran; copied to the rows.
PLACEMENT_KEYS = ("node_id", "hostname", "gpu_ids", "cpus", "gpus", "placement_group",
                  "started_at", "finished_at", "cached")


def _summary(ctx: TrialContext, teacher: dict | None, results: dict[str, dict], status: str,
             teacher_acc: float) -> dict:
    students = []
    for template in ctx.attack_templates:
        name = attack_name(template)
        r = results.get(name)
        base = ctx.baselines.get(name, {})
        students.append({
            "student_arch": template.model.label,
            "attack": template.attack,
            "kd_temperature": template.kd_temperature,
            "kd_alpha": template.kd_alpha,
            "status": r["status"] if r else "skipped",
            "student_acc": r["test_acc"] if r and r["test_acc"] is not None else math.nan,
            **{k: base.get(k, math.nan) for k in BASELINES},
            "best_epoch": r["best_epoch"] if r else -1,
            "wall_s": r["wall_s"] if r else 0.0,
            **{k: r[k] for k in PLACEMENT_KEYS if r and k in r},
        })
    finished = [s for s in students if s["status"] == "ok"]
    best = max(finished, key=lambda s: s["student_acc"]) if finished else None
    teacher_acc = math.nan if teacher_acc is None else float(teacher_acc)
    teacher_wall = teacher["wall_s"] if teacher else 0.0
    return {
        "status": status,
        "teacher_acc": teacher_acc,
        "student_acc": best["student_acc"] if best and status == "ok" else math.nan,
        "best_student": best["student_arch"] if best else "",
        "best_attack": best["attack"] if best else "",
        "normal_teacher_acc": ctx.normal_teacher_acc,
        "teacher_drop": ctx.normal_teacher_acc - teacher_acc,
        "teacher_wall_s": teacher_wall,
        "teacher_cached": bool(teacher and teacher.get("cached")),  # an earlier attempt trained it
        # compute seconds of the trial's phases (the students may have run side by side)
        "compute_s": teacher_wall + sum(s["wall_s"] for s in students),
        "students": students,
    }
