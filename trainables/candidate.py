"""One defense candidate, start to finish: build the defended teacher, gate it, attack it with
every attack on every student, and summarise: a defense is as good as its best clone. What runs
each phase, and where, is the caller's: `run_candidate` hands lists of `PhaseJob`s to runners
(the Tune shell runs the teacher in the trial's process and the students as parallel child
tasks; tests run them in-process).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from undistill.outcomes import Baselines, Candidate, CandidateOutcome, Placement, StudentOutcome, number

from .defenses import Defense
from .phases import PhaseConfig, PhaseJob
from .pruning import Pruning, dominated, waves

# A runner takes independent phases and returns their results in the same order. A finished
# phase (found by its key) is returned, not trained again: this is how a retried trial resumes.
RunPhases = Callable[[list[PhaseJob]], list[dict]]


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its candidate; built once by the orchestrator."""

    normal_teacher_key: str  # the normal teacher's phase key (its weights are found by it)
    normal_teacher_acc: float  # percent, test
    defenses: dict[str, Defense]  # the registered entries a sweep searches, by name
    # phase "defense" with the defense and knobs still unset: a defended teacher trains like the
    # normal one, from scratch, with the same architecture (None: no searched defense trains one)
    defense_template: PhaseConfig | None
    # phase "attack", one per student × attack, seeing the teacher as it is
    attack_templates: tuple[PhaseConfig, ...]
    # attack name (see `attack_name`) -> each row's baselines
    baselines: dict[str, Baselines] = field(default_factory=dict)
    max_teacher_drop: float | None = None  # points; a teacher losing more is not distilled
    # how to compute the normal teacher again should its artifact be lost or damaged mid-sweep
    # (None: a phase that finds it so fails with `ArtifactMissing`)
    normal_teacher_job: PhaseJob | None = None


def candidate_jobs(candidate: Candidate, ctx: TrialContext) -> tuple[PhaseJob | None, list[PhaseJob]]:
    """The candidate's phases: its teacher (None when the defense trains none) and its students."""
    defense = ctx.defenses[candidate.defense]
    normal = ctx.normal_teacher_job
    teacher, teacher_key, teacher_job = None, ctx.normal_teacher_key, normal
    if defense.trains_teacher:
        cfg = replace(ctx.defense_template, defense=defense, knobs=candidate.knobs)
        teacher = PhaseJob(defense.name, cfg, cfg.key(ctx.normal_teacher_key), ctx.normal_teacher_key, normal)
        teacher_key, teacher_job = teacher.key, teacher
    view = (defense, candidate.knobs) if defense.transforms_logits else (None, ())
    students = []
    for template in ctx.attack_templates:
        cfg = replace(template, defense=view[0], knobs=view[1])
        students.append(PhaseJob(attack_name(cfg), cfg, cfg.key(teacher_key), teacher_key, teacher_job))
    return teacher, students


def attack_name(cfg: PhaseConfig) -> str:
    """One attack on one student: `kd-T4 mlp`, `dafl cnn1d(width=16)`."""
    return f"{cfg.attack.label} {cfg.model.label}"


def run_candidate(candidate: Candidate, ctx: TrialContext, run_teacher: RunPhases,
                  run_students: RunPhases, pruning: Pruning | None = None) -> CandidateOutcome:
    """Evaluate one candidate: its status (ok | dominated | diverged | infeasible), its teacher's
    accuracy, the best clone (the highest accuracy over students × attacks), and every clone.

    `pruning` (None: every attack runs, as `--full-suite`): the attacks run in its waves and
    order, and stop once the candidate is dominated by its front (`pruning.dominated`); the
    status is then `dominated`, the best clone a lower bound, the attacks not run `skipped`."""
    teacher_job, student_jobs = candidate_jobs(candidate, ctx)

    # 1. the defended teacher (a transforming one is the normal teacher behind its transform)
    teacher = run_teacher([teacher_job])[0] if teacher_job else None
    if teacher is not None and teacher["status"] != "ok":
        return _summary(candidate, ctx, teacher, {}, "diverged", None)
    teacher_acc = teacher["test_acc"] if teacher else ctx.normal_teacher_acc

    # 2. the gate: a teacher that already lost too much is not worth its students
    if ctx.max_teacher_drop is not None and ctx.normal_teacher_acc - teacher_acc > ctx.max_teacher_drop:
        return _summary(candidate, ctx, teacher, {}, "infeasible", teacher_acc)

    # 3. the attacks: every student, by every attack, from the defended teacher; with pruning,
    # in waves, strongest first, until the clones so far show the candidate is beaten
    by_name = {j.name: j for j in student_jobs}
    if pruning is None:
        groups = [list(by_name)]
    else:
        order = [n for n in pruning.order if n in by_name] + [n for n in by_name if n not in pruning.order]
        groups = waves(order, pruning.wave, pruning.rest_together)
    results: dict[str, dict] = {}
    beaten = False
    for i, group in enumerate(groups):
        results.update(zip(group, run_students([by_name[n] for n in group]), strict=True))
        if teacher is None:  # what the attacker's teacher scores through the transform
            seen = [r["teacher_acc_seen"] for r in results.values() if "teacher_acc_seen" in r]
            teacher_acc = seen[0] if seen else teacher_acc
        clones = [r["test_acc"] for r in results.values() if r["status"] == "ok" and r.get("test_acc") is not None]
        if pruning is not None and clones and i < len(groups) - 1 \
                and dominated((teacher_acc, max(clones)), pruning.front()):
            beaten = True
            break
    ok = any(r["status"] == "ok" for r in results.values())
    status = ("dominated" if beaten else "ok") if ok else "diverged"
    return _summary(candidate, ctx, teacher, results, status, teacher_acc)


def student_outcome(template: PhaseConfig, baselines: Baselines, result: dict | None,
                    status: str | None = None) -> StudentOutcome:
    """A student × attack's outcome from its phase's result (None: it never ran)."""
    return StudentOutcome(
        student_arch=template.model.label,
        attack=template.attack.label,
        kd_temperature=template.attack.kd_temperature,
        kd_alpha=template.attack.kd_alpha,
        status=status or (result["status"] if result else "skipped"),
        student_acc=number(result.get("test_acc")) if result else None,
        baselines=baselines,
        best_epoch=result.get("best_epoch", -1) if result else -1,
        wall_s=result.get("wall_s", 0.0) if result else 0.0,
        ran=Placement.from_result(result),
        # a phase that ran (or was cached) before batching existed trained alone
        batched=bool(result.get("batched", False)) if result and result.get("status") != "skipped" else None,
    )


def _summary(candidate: Candidate, ctx: TrialContext, teacher: dict | None,
             results: dict[str, dict], status: str, teacher_acc: float | None) -> CandidateOutcome:
    students = tuple(student_outcome(t, ctx.baselines.get(attack_name(t), Baselines()),
                                     results.get(attack_name(t)))
                     for t in ctx.attack_templates)
    finished = [s for s in students if s.status == "ok" and s.student_acc is not None]
    best = max(finished, key=lambda s: s.student_acc) if finished else None
    teacher_wall = teacher["wall_s"] if teacher else 0.0
    return CandidateOutcome(
        candidate=candidate,
        status=status,
        teacher_acc=number(teacher_acc),
        normal_teacher_acc=ctx.normal_teacher_acc,
        student_acc=best.student_acc if best and status in ("ok", "dominated") else None,
        best_student=best.student_arch if best else None,
        best_attack=best.attack if best else None,
        teacher_wall_s=teacher_wall,
        teacher_cached=bool(teacher and teacher.get("cached")),  # an earlier attempt trained it
        # compute seconds of the trial's phases (the students may have run side by side)
        compute_s=teacher_wall + sum(s.wall_s for s in students),
        students=students,
    )
