"""The one place that maps typed outcomes (`undistill.outcomes`) to a trial's Parquet rows."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from undistill.outcomes import Candidate, CandidateOutcome, Placement, StudentOutcome, SweepColumns, number


def trial_rows(*, sweep: str, trial_id: str, candidate: Candidate | None,
               outcome: CandidateOutcome | None, context: SweepColumns,
               error: str | None = None, replicate_of: str | None = None) -> tuple[dict, list[dict]]:
    """The trial row and its student × attack rows, as `schema.TRIALS` and `schema.STUDENTS`.

    `replicate_of`: the trial id of the candidate this trial re-runs under `context.seed`
    (`confirm`); None for a trial of the search.
    `outcome` is None when the trial failed (`error` says why): its row has no numbers, and its
    student rows are the sweep's baselines with status `error`. `candidate` is None only when
    the trial failed before one was drawn."""
    candidate = outcome.candidate if outcome is not None else candidate
    knobs = {"defense": candidate.defense if candidate else None,
             "knobs": {k: float(v) for k, v in candidate.knobs} if candidate else None,
             "seed": context.seed, "replicate_of": replicate_of}
    status = outcome.status if outcome is not None and error is None else "error"
    if outcome is not None and outcome.students:
        students = outcome.students
    else:  # a failed trial still gets its student rows, with their baselines
        students = tuple(replace(s, status="error", student_acc=None) for s in context.students)
    ran = outcome.ran if outcome is not None else Placement()
    best = outcome.best if outcome is not None else None
    trial = {
        "sweep": sweep,
        "trial_id": trial_id,
        **knobs,
        "dataset": context.dataset,
        "teacher_arch": context.teacher_arch,
        "protocol": context.protocol,
        "status": status,
        "teacher_acc": number(outcome.teacher_acc) if outcome else None,
        "normal_teacher_acc": context.normal_teacher_acc,
        "teacher_drop": number(outcome.teacher_drop) if outcome else None,
        "student_acc": number(outcome.student_acc) if outcome and status in ("ok", "dominated") else None,
        "clone_lower_bound": outcome.clone_lower_bound if outcome and error is None else None,
        "best_student": outcome.best_student if outcome else None,
        "best_attack": outcome.best_attack if outcome else None,
        "kd_temperature": best.kd_temperature if best else None,
        "kd_alpha": best.kd_alpha if best else None,
        "wall_s": _span(ran),
        "compute_s": outcome.compute_s if outcome else None,
        "teacher_wall_s": outcome.teacher_wall_s if outcome else None,
        "teacher_cached": outcome.teacher_cached if outcome else None,
        **_where(ran),
        "started_at": _time(ran.started_at),
        "finished_at": _time(ran.finished_at) or datetime.now(UTC),
        "preset": context.preset,
        "config_fingerprint": context.config_fingerprint,
        "versions": {k: (None if v is None else str(v)) for k, v in sorted(context.versions.items())},
        "error": error,
    }
    return trial, [_student_row(sweep, trial_id, knobs, s, context.protocol) for s in students]


def _student_row(sweep: str, trial_id: str, knobs: dict, s: StudentOutcome, protocol: str) -> dict:
    return {
        "sweep": sweep,
        "trial_id": trial_id,
        **knobs,
        "student_arch": s.student_arch,
        "protocol": protocol,
        "attack": s.attack,
        "kd_temperature": s.kd_temperature,
        "kd_alpha": s.kd_alpha,
        "status": s.status,
        "student_acc": number(s.student_acc),
        "scratch_acc": number(s.baselines.scratch_acc),
        "smoothed_acc": number(s.baselines.smoothed_acc),
        "normal_kd_acc": number(s.baselines.normal_kd_acc),
        "best_epoch": s.best_epoch,
        "wall_s": number(s.wall_s),
        "batched": s.batched,
        "cached": s.ran.cached,
        **_where(s.ran),
        "started_at": _time(s.ran.started_at),
        "finished_at": _time(s.ran.finished_at),
    }


def _where(ran: Placement) -> dict:
    gpu_ids = None if ran.gpu_ids is None else list(ran.gpu_ids)
    return {"node_id": ran.node_id, "hostname": ran.hostname, "gpu_ids": gpu_ids,
            "cpus": ran.cpus, "gpus": ran.gpus, "placement_group": ran.placement_group}


def _span(ran: Placement) -> float | None:
    if ran.started_at is None or ran.finished_at is None:
        return None
    return ran.finished_at - ran.started_at


def _time(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)
