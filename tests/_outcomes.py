"""Typed outcomes for tests that write rows without running phases."""

from undistill.outcomes import Baselines, Candidate, CandidateOutcome, Placement, StudentOutcome, SweepColumns


def context(students=(), **kw) -> SweepColumns:
    fields = dict(dataset="mnist1d", teacher_arch="cnn1d", seed=0, preset="smoke", config_fingerprint="abc",
                  versions={}, normal_teacher_acc=96.0)
    return SweepColumns(**{**fields, **kw}, students=tuple(students))


def student(student_arch, attack, kd_temperature=4.0, kd_alpha=0.9, status="ok", student_acc=None,
            scratch_acc=None, smoothed_acc=None, normal_kd_acc=None, best_epoch=-1, wall_s=0.0,
            started_at=None, finished_at=None) -> StudentOutcome:
    return StudentOutcome(student_arch, attack, kd_temperature, kd_alpha, status, student_acc,
                          Baselines(scratch_acc, smoothed_acc, normal_kd_acc), best_epoch, wall_s,
                          Placement(started_at=started_at, finished_at=finished_at))


def outcome(defense, knobs, *, status="ok", teacher_acc=None, student_acc=None, normal_teacher_acc=96.0,
            best_student=None, best_attack=None, students=(), started_at=None, finished_at=None,
            compute_s=0.0) -> CandidateOutcome:
    return CandidateOutcome(Candidate.of(defense, **knobs), status, teacher_acc, normal_teacher_acc,
                            student_acc, best_student, best_attack, compute_s=compute_s,
                            students=tuple(students),
                            ran=Placement(started_at=started_at, finished_at=finished_at))
